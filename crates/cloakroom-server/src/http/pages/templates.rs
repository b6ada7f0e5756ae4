//! The HTML of the pages, escaped by construction (maud), with no inline script or style so the
//! Content-Security-Policy can forbid both.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cloakroom::{Authenticated, Session};
use maud::{html, Markup, DOCTYPE};
use time::OffsetDateTime;

use crate::http::error::ApiError;

/// The policy of every page: nothing but our stylesheet, our one script (passkeys), requests to
/// ourselves and our own forms.
pub const PAGE_CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     script-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// A rendered page with its status.
pub struct Page {
    /// The status (200, or the error's).
    pub status: StatusCode,
    /// The document.
    pub body: Markup,
}

impl Page {
    /// A 200 page.
    pub fn ok(body: Markup) -> Self {
        Self {
            status: StatusCode::OK,
            body,
        }
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let mut res = (self.status, self.body.into_string()).into_response();
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(PAGE_CSP),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // Not `no-referrer`: under it a browser sends `Origin: null` with our own form posts,
        // which the CSRF check must refuse. `same-origin` still sends nothing to other sites.
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
        // For browsers older than `frame-ancestors`.
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        // A page that says "try again shortly" says when, as the API does.
        if self.status == StatusCode::SERVICE_UNAVAILABLE && !h.contains_key(header::RETRY_AFTER) {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        res
    }
}

/// Which page is shown, for the navigation's `aria-current`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// `/dashboard`.
    Dashboard,
    /// `/profile`.
    Profile,
    /// `/settings`.
    Settings,
    /// A page outside the signed-in area.
    None,
}

pub(super) fn when(t: OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    t.format(&f)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// A short, readable name for a browser from its `User-Agent`.
pub fn device(user_agent: Option<&str>) -> String {
    let Some(ua) = user_agent else {
        return "Unknown device".into();
    };
    let browser = [
        ("Edg/", "Edge"),
        ("HeadlessChrome", "Headless Chrome"),
        ("Chrome/", "Chrome"),
        ("Firefox/", "Firefox"),
        ("Safari/", "Safari"),
        ("curl/", "curl"),
    ]
    .iter()
    .find(|(needle, _)| ua.contains(needle))
    .map(|(_, name)| *name);
    let system = [
        ("Android", "Android"),
        ("iPhone", "iPhone"),
        ("iPad", "iPad"),
        ("Windows", "Windows"),
        ("Mac OS X", "macOS"),
        ("Linux", "Linux"),
    ]
    .iter()
    .find(|(needle, _)| ua.contains(needle))
    .map(|(_, name)| *name);
    match (browser, system) {
        (Some(b), Some(s)) => format!("{b} on {s}"),
        (Some(b), None) => b.to_string(),
        _ => ua.chars().take(60).collect(),
    }
}

pub(super) fn layout(
    title: &str,
    nav: Nav,
    signed_in: Option<(&Authenticated, &str)>,
    main: Markup,
) -> Markup {
    let current = |n: Nav| (nav == n).then_some("page");
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · cloakroom" }
                link rel="stylesheet" href="/static/style.css";
                script src="/static/passkeys.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    nav aria-label="Main" {
                        span.brand { "cloakroom" }
                        @if let Some((who, csrf)) = signed_in {
                            a href="/dashboard" aria-current=[current(Nav::Dashboard)] { "Dashboard" }
                            a href="/profile" aria-current=[current(Nav::Profile)] { "Profile" }
                            a href="/settings" aria-current=[current(Nav::Settings)] { "Settings" }
                            form.logout method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(csrf);
                                button type="submit" title={ "Log out " (who.user.email.as_str()) } { "Log out" }
                            }
                        }
                    }
                }
                main #main { (main) }
            }
        }
    }
}

pub(super) fn alert(error: Option<&str>, notice: Option<&str>) -> Markup {
    html! {
        @if let Some(e) = error { p.error role="alert" id="form-error" { (e) } }
        @if let Some(n) = notice { p.notice role="status" { (n) } }
    }
}

/// What the login form shows.
pub struct LoginForm<'a> {
    /// The email typed (kept after an error).
    pub email: &'a str,
    /// Where to go after logging in: a path on this site,
    pub next: Option<&'a str>,
    /// or an allowed URL on another host (wins over `next`).
    pub rd: Option<&'a str>,
    /// "Remember me" was ticked.
    pub remember: bool,
    /// The form's CSRF token.
    pub csrf: &'a str,
    /// What went wrong, in plain words.
    pub error: Option<&'a str>,
    /// A notice (account created, logged out).
    pub notice: Option<&'a str>,
}

/// What the step-up form shows.
pub struct StepUpForm<'a> {
    /// Who is signed in.
    pub who: &'a Authenticated,
    /// The form's CSRF token (the session's).
    pub csrf: &'a str,
    /// Where to go afterwards: a path on this site,
    pub next: Option<&'a str>,
    /// or an allowed URL on another host.
    pub rd: Option<&'a str>,
    /// The page asked for two factors.
    pub aal2: bool,
    /// The user has an authenticator app.
    pub has_app: bool,
    /// What went wrong, in plain words.
    pub error: Option<&'a str>,
}

/// `/step-up`: proving oneself again for a page that asks for a stronger or more recent login.
pub fn step_up(f: &StepUpForm<'_>) -> Markup {
    let described = f.error.map(|_| "form-error");
    layout(
        "Confirm it's you",
        Nav::None,
        None,
        html! {
            h1 { "Confirm it's you" }
            (alert(f.error, None))
            @if f.aal2 && !f.has_app {
                p.notice role="status" {
                    "This page needs two-step verification. Add an authenticator app in your "
                    "settings first."
                }
            }
            p {
                "The page you asked for needs a recent sign-in"
                @if f.aal2 { " with two-step verification" }
                ". You are signed in as " strong { (f.who.user.email.as_str()) } "."
            }
            form.card method="post" action="/step-up" {
                input type="hidden" name="csrf" value=(f.csrf);
                @if let Some(next) = f.next { input type="hidden" name="next" value=(next); }
                @if let Some(rd) = f.rd { input type="hidden" name="rd" value=(rd); }
                @if f.aal2 { input type="hidden" name="aal" value="2"; }
                label for="password" { "Password" }
                input #password type="password" name="password" autocomplete="current-password"
                    required[!f.has_app] autofocus aria-describedby=[described];
                @if f.has_app {
                    label for="code" { "Code from your authenticator app, or a recovery code" }
                    input #code type="text" name="code" autocomplete="one-time-code"
                        autocapitalize="none" spellcheck="false" required[f.aal2]
                        aria-describedby=[described];
                }
                button type="submit" { "Continue" }
            }
        },
    )
}

/// What the second step of the login form shows.
pub struct MfaForm<'a> {
    /// The login attempt's token.
    pub mfa_token: &'a str,
    /// Where to go afterwards: a path on this site,
    pub next: Option<&'a str>,
    /// or an allowed URL on another host.
    pub rd: Option<&'a str>,
    /// The form's CSRF token.
    pub csrf: &'a str,
    /// What went wrong, in plain words.
    pub error: Option<&'a str>,
}

/// The second step of logging in (posted to `/login/mfa`).
pub fn login_mfa(f: &MfaForm<'_>) -> Markup {
    let described = f.error.map(|_| "form-error");
    layout(
        "Two-step verification",
        Nav::None,
        None,
        html! {
            h1 { "Two-step verification" }
            (alert(f.error, None))
            form.card method="post" action="/login/mfa" {
                input type="hidden" name="csrf" value=(f.csrf);
                input type="hidden" name="mfa_token" value=(f.mfa_token);
                @if let Some(next) = f.next { input type="hidden" name="next" value=(next); }
                @if let Some(rd) = f.rd { input type="hidden" name="rd" value=(rd); }
                label for="code" { "Code from your authenticator app, or a recovery code" }
                input #code type="text" name="code" autocomplete="one-time-code"
                    autocapitalize="none" spellcheck="false" required autofocus
                    aria-describedby=[described];
                button type="submit" { "Verify" }
                button.secondary #passkey-mfa type="button" hidden { "Use a passkey instead" }
            }
            p.error #passkey-error role="alert" hidden {}
        },
    )
}

/// `/logout`: the question a logout link leads to.
pub fn logout(who: &Authenticated, csrf: &str, rd: Option<&str>) -> Markup {
    layout(
        "Log out",
        Nav::None,
        None,
        html! {
            h1 { "Log out?" }
            p {
                "You are logged in as " strong { (who.user.email.as_str()) } ". Logging out ends \
                 this session on every site that uses it."
            }
            form.card method="post" action="/logout" {
                input type="hidden" name="csrf" value=(csrf);
                @if let Some(rd) = rd { input type="hidden" name="rd" value=(rd); }
                button #logout type="submit" { "Log out" }
            }
        },
    )
}

/// `/login`.
pub fn login(f: &LoginForm<'_>) -> Markup {
    let described = f.error.map(|_| "form-error");
    layout(
        "Log in",
        Nav::None,
        None,
        html! {
            h1 { "Log in" }
            (alert(f.error, f.notice))
            p.error #passkey-error role="alert" hidden {}
            form.card method="post" action="/login" {
                input type="hidden" name="csrf" value=(f.csrf);
                @if let Some(next) = f.next { input type="hidden" name="next" value=(next); }
                @if let Some(rd) = f.rd { input type="hidden" name="rd" value=(rd); }
                label for="email" { "Email" }
                input #email type="email" name="email" value=(f.email)
                    autocomplete="username webauthn" required autofocus
                    aria-describedby=[described];
                label for="password" { "Password" }
                input #password type="password" name="password" autocomplete="current-password"
                    required aria-describedby=[described];
                div.check {
                    input #remember type="checkbox" name="remember" value="1" checked[f.remember];
                    label for="remember" { "Remember me on this device for 30 days" }
                }
                button type="submit" { "Log in" }
                button.secondary #passkey-login type="button" hidden { "Sign in with a passkey" }
            }
            p { a href="/forgot-password" { "Forgot your password?" } }
            p { "No account yet? " a href="/signup" { "Sign up" } }
        },
    )
}

/// `/signup`.
pub fn signup(email: &str, csrf: &str, error: Option<&str>) -> Markup {
    let described = error.map(|_| "form-error");
    layout(
        "Sign up",
        Nav::None,
        None,
        html! {
            h1 { "Create an account" }
            (alert(error, None))
            form.card method="post" action="/signup" {
                input type="hidden" name="csrf" value=(csrf);
                label for="email" { "Email" }
                input #email type="email" name="email" value=(email) autocomplete="username"
                    required autofocus aria-describedby=[described];
                label for="password" { "Password" }
                input #password type="password" name="password" autocomplete="new-password"
                    required minlength="8" aria-describedby="password-help";
                p.help #password-help { "At least 8 characters. Common passwords are refused." }
                button type="submit" { "Sign up" }
            }
            p { "Already have an account? " a href="/login" { "Log in" } }
        },
    )
}

/// `/dashboard`.
pub fn dashboard(who: &Authenticated, csrf: &str) -> Markup {
    layout(
        "Dashboard",
        Nav::Dashboard,
        Some((who, csrf)),
        html! {
            h1 { "Dashboard" }
            p.lead { "Signed in as " strong.private { (who.user.email.as_str()) } "." }
            ul.tiles {
                li { a href="/profile" { "Your profile" } " — who you are to this site." }
                li { a href="/settings" { "Settings" } " — your devices, and your password." }
                li { a href="/settings/security" { "Two-step verification" } " — an authenticator app and recovery codes." }
            }
            p.muted { "This session ends at " (when(who.expires_at)) " unless you use it again." }
        },
    )
}

/// `/profile`.
pub fn profile(who: &Authenticated, csrf: &str) -> Markup {
    let roles: Vec<&str> = who.user.roles.iter().map(|r| r.as_str()).collect();
    layout(
        "Profile",
        Nav::Profile,
        Some((who, csrf)),
        html! {
            h1 { "Profile" }
            dl.card.private {
                dt { "Email" } dd { (who.user.email.as_str()) }
                dt { "User id" } dd { code { (who.user.id.to_string()) } }
                dt { "Roles" } dd { (roles.join(", ")) }
                dt { "Member since" } dd { (when(who.user.created_at)) }
                dt { "This session began" } dd { (when(who.session.created_at)) }
            }
        },
    )
}

/// What the settings page shows.
pub struct SettingsView<'a> {
    /// The caller.
    pub who: &'a Authenticated,
    /// One page of their sessions, with last activity.
    pub sessions: &'a [(Session, OffsetDateTime)],
    /// Where the page starts in the whole list.
    pub from: usize,
    /// How many sessions there are in all.
    pub total: usize,
    /// Where the pages of newer and older sessions start, if there are any.
    pub newer: Option<usize>,
    /// See `newer`.
    pub older: Option<usize>,
    /// The forms' CSRF token.
    pub csrf: &'a str,
    /// What went wrong.
    pub error: Option<&'a str>,
    /// What went right.
    pub notice: Option<&'a str>,
}

/// `/settings`.
pub fn settings(v: &SettingsView<'_>) -> Markup {
    let current = v.who.session.id;
    layout(
        "Settings",
        Nav::Settings,
        Some((v.who, v.csrf)),
        html! {
            h1 { "Settings" }
            (alert(v.error, v.notice))
            p { a href="/settings/security" { "Two-step verification" } " — an authenticator app and recovery codes." }
            section aria-labelledby="devices" {
                h2 #devices { "Where you are logged in" }
                div.table {
                    table.private {
                        thead { tr { th scope="col" { "Device" } th scope="col" { "IP address" } th scope="col" { "Last seen" } th scope="col" { span.sr { "Action" } } } }
                        tbody {
                            @for (s, seen) in v.sessions {
                                tr {
                                    td {
                                        (device(s.user_agent.as_deref()))
                                        @if s.id == current { " " span.badge { "this device" } }
                                        @if s.transport == cloakroom::Transport::Token { " " span.badge { "app" } }
                                        @if s.dpop_jkt.is_some() || s.dbsc_key.is_some() {
                                            " " span.badge title="A copy of this session's cookie or tokens does not work on another device" { "bound to its device" }
                                        }
                                    }
                                    td { (s.ip.as_deref().unwrap_or("—")) }
                                    td { (when(*seen)) }
                                    td {
                                        form method="post" action={ "/settings/sessions/" (s.id.to_string()) "/end" } {
                                            input type="hidden" name="csrf" value=(v.csrf);
                                            button.link type="submit" aria-label={ "Log out " (device(s.user_agent.as_deref())) } {
                                                @if s.id == current { "Log out" } @else { "End" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                @if v.total > v.sessions.len() {
                    nav aria-label="More sessions" {
                        p {
                            "Showing " (v.from + 1) "–" (v.from + v.sessions.len()) " of " (v.total) ". "
                            @if let Some(newer) = v.newer {
                                a href={ "/settings?from=" (newer) } { "Newer" }
                                " "
                            }
                            @if let Some(older) = v.older {
                                a href={ "/settings?from=" (older) } { "Older" }
                            }
                        }
                    }
                }
                form.card method="post" action="/settings/logout-everywhere" {
                    input type="hidden" name="csrf" value=(v.csrf);
                    label for="everywhere-password" { "Current password" }
                    input #everywhere-password type="password" name="current_password"
                        autocomplete="current-password" aria-describedby="everywhere-help";
                    p.help #everywhere-help { "Needed if you logged in more than 10 minutes ago." }
                    button.danger type="submit" { "Log out everywhere" }
                }
            }
            section aria-labelledby="password-heading" {
                h2 #password-heading { "Change your password" }
                form.card method="post" action="/settings/password" {
                    input type="hidden" name="csrf" value=(v.csrf);
                    label for="current_password" { "Current password" }
                    input #current_password type="password" name="current_password" autocomplete="current-password" required;
                    label for="new_password" { "New password" }
                    input #new_password type="password" name="new_password" autocomplete="new-password" required minlength="8";
                    label for="new_password_again" { "New password, again" }
                    input #new_password_again type="password" name="new_password_again" autocomplete="new-password" required minlength="8";
                    p.help { "Changing it logs you out on every other device." }
                    button type="submit" { "Change password" }
                }
            }
            (account_section(v.who, v.csrf))
        },
    )
}

/// The settings page's account part: the address (confirmed or not, with a new link), moving
/// to another address, a copy of one's data, and deleting the account.
fn account_section(who: &Authenticated, csrf: &str) -> Markup {
    html! {
        section aria-labelledby="email-heading" {
            h2 #email-heading { "Email address" }
            p {
                span.private { (who.user.email.as_str()) } " "
                @if who.user.email_verified {
                    span.badge { "confirmed" }
                } @else {
                    span.badge { "not confirmed" }
                }
            }
            @if !who.user.email_verified {
                form method="post" action="/settings/email/verify" {
                    input type="hidden" name="csrf" value=(csrf);
                    button.link type="submit" { "Send a new confirmation link" }
                }
            }
            form.card method="post" action="/settings/email" {
                input type="hidden" name="csrf" value=(csrf);
                label for="new_email" { "New email address" }
                input #new_email type="email" name="new_email" autocomplete="email" required;
                label for="email-password" { "Current password" }
                input #email-password type="password" name="current_password"
                    autocomplete="current-password" aria-describedby="email-help";
                p.help #email-help {
                    "Needed if you logged in more than 10 minutes ago. The new address gets a \
                     link that completes the change; the old one is told, with a link that \
                     undoes it."
                }
                button type="submit" { "Change email address" }
            }
        }
        section aria-labelledby="account-heading" {
            h2 #account-heading { "Your data" }
            p { a href="/auth/account/export" download { "Download your data" } " (JSON: your account, sessions, second factors and security events)." }
            form.card method="post" action="/settings/account/delete" {
                input type="hidden" name="csrf" value=(csrf);
                label for="delete-password" { "Current password" }
                input #delete-password type="password" name="current_password"
                    autocomplete="current-password" required aria-describedby="delete-help";
                p.help #delete-help {
                    "Deleting your account logs you out everywhere and removes your data. It \
                     cannot be undone."
                }
                button.danger type="submit" { "Delete my account" }
            }
        }
    }
}

/// A page for an error that is not a form's (the store is down, a refused request).
pub fn error_page(e: &ApiError) -> Page {
    let title = match e.status() {
        StatusCode::FORBIDDEN => "Refused",
        StatusCode::SERVICE_UNAVAILABLE => "Try again shortly",
        StatusCode::TOO_MANY_REQUESTS => "Too many attempts",
        StatusCode::NOT_FOUND => "Not found",
        _ => "Something went wrong",
    };
    Page {
        status: e.status(),
        body: layout(
            title,
            Nav::None,
            None,
            html! {
                h1 { (title) }
                p.error role="alert" { (sentence(e.message())) }
                p { a href="/dashboard" { "Back to the dashboard" } }
            },
        ),
    }
}

/// The message as a sentence: capitalised, with a full stop.
pub fn sentence(message: &str) -> String {
    let mut chars = message.chars();
    let mut s: String = match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    };
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_named_plainly() {
        let chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36";
        assert_eq!(device(Some(chrome)), "Chrome on Linux");
        assert_eq!(device(Some("curl/8.5.0")), "curl");
        assert_eq!(device(None), "Unknown device");
    }

    #[test]
    fn markup_is_escaped() {
        let html = signup("<script>alert(1)</script>", "t", Some("\"><b>")).into_string();
        assert!(!html.contains("<script>alert"));
        assert!(!html.contains("\"><b>"));
    }

    #[test]
    fn sentences() {
        assert_eq!(
            sentence("the email or password is wrong"),
            "The email or password is wrong."
        );
        assert_eq!(sentence("Done."), "Done.");
    }
}
