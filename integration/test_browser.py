"""The login once more, in a real browser: headless Debian chromium."""

import json
import os
import shutil
import subprocess

import stack


def test_chromium_logs_in_and_lands_on_the_page_it_asked_for(gateway, op, logdir):
    assert shutil.which("chromium") or os.path.exists("/usr/bin/chromium"), "chromium is not installed (scripts/setup.sh installs it)"
    shot = os.path.join(logdir, "browser-login.png")
    out = subprocess.run(
        ["node", os.path.join(stack.ROOT, "integration", "browser", "login.mjs"), gateway.url, "/app/dashboard?tab=1", "alice", shot],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert "error" not in result, result
    assert result["loginPage"].startswith(op.issuer + "/interaction/")
    assert result["finalUrl"] == gateway.url + "/app/dashboard?tab=1"
    assert result["body"]["headers"]["x-wam-user"] == "alice"
    assert result["body"]["headers"]["x-wam-groups"] == "staff,admins"
    session = next(c for c in result["cookies"] if c["name"] == "PA.wam")
    assert session["httpOnly"] and session["sameSite"] == "Lax" and session["path"] == "/"
    assert not any(c["name"].startswith("PA.wam.txn.") for c in result["cookies"]), "transaction cookie consumed"
