//! The panel's page frame and the small pieces every page uses: ages,
//! instants, the confirmation form, error pages. Markup is `maud`, which
//! escapes every value it is given.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use clawcut_core::Millis;
use maud::{DOCTYPE, Markup, html};

use super::auth::Operator;

/// The Content-Security-Policy of every panel answer: nothing but this
/// origin's own files, no inline script or style, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// What the page frame needs besides the body.
pub struct Frame<'a> {
    pub title: &'a str,
    pub op: Option<&'a Operator>,
    /// Refresh `main` every this many milliseconds (the page's JS).
    pub refresh_ms: Option<u32>,
    /// A notice at the top (`?done=`), and whether it is an error.
    pub flash: Option<(String, bool)>,
}

pub fn page(status: StatusCode, f: Frame<'_>, body: Markup) -> Response {
    let doc = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (f.title) " · clawcut-worker" }
                link rel="stylesheet" href="/ops/static/panel.css";
                script src="/ops/static/panel.js" defer {}
            }
            body {
                a.skip href="#content" { "Skip to content" }
                header {
                    nav aria-label="Panel" {
                        a #nav-overview href="/ops" { "Overview" }
                        a #nav-jobs href="/ops/jobs?view=all" { "Jobs" }
                        a #nav-stranded href="/ops/jobs?view=stranded" { "Stranded" }
                        a #nav-inbox href="/ops/inbox" { "Needs operator" }
                    }
                    @if let Some(op) = f.op {
                        div.who {
                            span { (op.name) " (" (op.role.label()) ")" }
                            form #logout method="post" action="/ops/logout" {
                                input type="hidden" name="csrf" value=(op.csrf());
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main #content data-refresh=[f.refresh_ms] {
                    @if let Some((msg, is_error)) = &f.flash {
                        p #flash .flash .error[*is_error] role=(if *is_error { "alert" } else { "status" }) { (msg) }
                    }
                    (body)
                }
            }
        }
    };
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        doc.into_string(),
    )
        .into_response()
}

/// An error page (a refused action, a missing job).
pub fn problem(status: StatusCode, op: Option<&Operator>, msg: &str) -> Response {
    let msg = clawcut_core::redact::redact(msg).into_owned();
    page(
        status,
        Frame {
            title: "Problem",
            op,
            refresh_ms: None,
            flash: Some((msg, true)),
        },
        html! { p { a href="/ops" { "Back to the overview" } } },
    )
}

/// The confirmation step of an action: a form that POSTs to `action` with
/// the CSRF token, the `hidden` fields, and (when `reason` is some label)
/// a reason box, required when `reason_required`.
pub struct Confirm<'a> {
    pub action: &'a str,
    pub button: &'a str,
    pub hidden: &'a [(&'a str, &'a str)],
    pub reason: Option<&'a str>,
    pub reason_required: bool,
    pub back: &'a str,
}

pub fn confirm_form(op: &Operator, c: &Confirm<'_>) -> Markup {
    html! {
        form #confirm method="post" action=(c.action) {
            input type="hidden" name="csrf" value=(op.csrf());
            @for (k, v) in c.hidden {
                input type="hidden" name=(k) value=(v);
            }
            @if let Some(label) = c.reason {
                label for="reason" { (label) }
                textarea #reason name="reason" rows="3" required[c.reason_required] {}
            }
            div.actions {
                button type="submit" .danger { (c.button) }
                a href=(c.back) { "Back" }
            }
        }
    }
}

/// `12s`, `4m 2s`, `3h 7m`, `2d 5h`: the two largest units.
pub fn age(ms: Millis) -> String {
    if ms < 0 {
        return format!("in {}", age(-ms));
    }
    let s = ms / 1000;
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {sec}s")
    } else if ms >= 1000 {
        format!("{sec}s")
    } else {
        format!("{ms}ms")
    }
}

/// An instant as RFC 3339 UTC, seconds precision.
pub fn instant(ms: Millis) -> String {
    if ms <= 0 {
        return "never".into();
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.unsigned_abs());
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `<time>` with the instant and, as its text, how long ago.
pub fn ago(now: Millis, at: Millis) -> Markup {
    html! {
        time datetime=(instant(at)) title=(instant(at)) { (age(now - at)) " ago" }
    }
}

/// A count that may have stopped at its cap.
pub fn capped(n: u64, capped: bool) -> String {
    if capped {
        format!("≥ {n}")
    } else {
        n.to_string()
    }
}

/// At most `max` characters of `s`, with an ellipsis when cut.
pub fn clip(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).collect();
    if s.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_two_units() {
        assert_eq!(age(450), "450ms");
        assert_eq!(age(12_000), "12s");
        assert_eq!(age(242_000), "4m 2s");
        assert_eq!(age(3 * 3_600_000 + 7 * 60_000), "3h 7m");
        assert_eq!(age(2 * 86_400_000 + 5 * 3_600_000), "2d 5h");
        assert_eq!(age(-60_000), "in 1m 0s");
    }

    #[test]
    fn values_are_escaped_and_clipped() {
        let m = html! { p { (clip("<script>alert(1)</script>", 10)) } };
        assert_eq!(m.into_string(), "<p>&lt;script&gt;al…</p>");
        assert_eq!(capped(10_000, true), "≥ 10000");
        assert_eq!(instant(1_800_000_000_000), "2027-01-15T08:00:00Z");
    }
}
