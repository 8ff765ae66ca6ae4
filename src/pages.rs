//! The gateway's own answers: short HTML pages for browsers, JSON for everything else.
//! They say what happened and give a reference to find the log line; never a token or secret.

use crate::http::LocalResponse;

pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// An answer to a failed or refused request.
pub struct Problem<'a> {
    pub status: u32,
    /// Machine-readable code, e.g. `login_required`.
    pub code: &'a str,
    /// One sentence for a person.
    pub message: &'a str,
    /// Ties the answer to the gateway's log line.
    pub reference: Option<&'a str>,
    /// Where a person can try again.
    pub retry: Option<&'a str>,
}

impl Problem<'_> {
    pub fn respond(&self, html: bool) -> LocalResponse {
        if html {
            let mut body = format!(
                "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
                 <body><h1>{title}</h1><p>{message}</p>",
                title = escape(self.title()),
                message = escape(self.message),
            );
            if let Some(retry) = self.retry {
                body.push_str(&format!(
                    "<p><a href=\"{}\">Try again</a></p>",
                    escape(retry)
                ));
            }
            body.push_str(&format!("<p><small>code: {}", escape(self.code)));
            if let Some(r) = self.reference {
                body.push_str(&format!(" &middot; reference: {}", escape(r)));
            }
            body.push_str("</small></p></body></html>\n");
            LocalResponse::new(self.status).body("text/html; charset=utf-8", body)
        } else {
            let mut body = format!(
                "{{\"error\":{},\"message\":{}",
                json_string(self.code),
                json_string(self.message)
            );
            if let Some(r) = self.reference {
                body.push_str(&format!(",\"reference\":{}", json_string(r)));
            }
            body.push_str("}\n");
            LocalResponse::new(self.status).body("application/json", body)
        }
    }

    fn title(&self) -> &'static str {
        match self.status {
            400 => "Bad request",
            401 => "Sign-in required",
            403 => "Access denied",
            502 => "Sign-in service error",
            503 => "Sign-in service unavailable",
            504 => "Sign-in service timed out",
            _ => "Error",
        }
    }
}

/// The page a cross-site logout gets instead of ending the session: a button that posts the
/// logout from this origin. `path` is the gateway's own logout path (configuration).
pub fn confirm_logout(path: &str) -> LocalResponse {
    let path = escape(path);
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Sign out?</title></head>\
         <body><h1>Sign out?</h1><p>Another site asked to sign you out.</p>\
         <form method=\"post\" action=\"{path}\"><button type=\"submit\">Sign out</button></form>\
         </body></html>\n"
    );
    LocalResponse::new(200)
        .header("x-frame-options", "DENY")
        .header("content-security-policy", "frame-ancestors 'none'")
        .body("text/html; charset=utf-8", body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_and_json_are_escaped() {
        let p = Problem {
            status: 403,
            code: "x<y",
            message: "a \"quoted\" <b>message</b>",
            reference: Some("ref1"),
            retry: Some("/a?b=1&c=\"2\""),
        };
        let html = String::from_utf8(p.respond(true).body).unwrap();
        assert!(html.contains("&lt;b&gt;message&lt;/b&gt;"));
        assert!(html.contains("href=\"/a?b=1&amp;c=&quot;2&quot;\""));
        assert!(html.contains("reference: ref1"));
        let r = p.respond(false);
        assert_eq!(r.header_value("content-type"), Some("application/json"));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"], "x<y");
        assert_eq!(v["reference"], "ref1");
        assert_eq!(r.status, 403);
        assert_eq!(r.header_value("cache-control"), Some("no-store"));
    }
}
