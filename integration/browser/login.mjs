// A real browser logs in through the gateway: headless Debian chromium, driven by
// playwright-core (no browser download). Prints one JSON line with what it saw.
//
// usage: node login.mjs <gateway-url> <path> <username> [screenshot.png]

import { chromium } from 'playwright-core';

const [gateway, path, username, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
const result = {};
try {
  const page = await browser.newPage();
  await page.goto(gateway + path);
  result.loginPage = page.url();
  await page.fill('input[name="login"]', username);
  await page.fill('input[name="password"]', 'any-password');
  await Promise.all([page.waitForURL((u) => u.toString().startsWith(gateway), { timeout: 15000 }), page.click('button[type="submit"]')]);
  await page.waitForLoadState('load');
  result.finalUrl = page.url();
  result.body = JSON.parse(await page.locator('body').innerText());
  result.cookies = (await page.context().cookies()).map((c) => ({ name: c.name, httpOnly: c.httpOnly, sameSite: c.sameSite, path: c.path }));
  if (screenshot) await page.screenshot({ path: screenshot });
} catch (e) {
  result.error = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
