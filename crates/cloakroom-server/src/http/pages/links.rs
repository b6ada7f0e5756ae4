//! The pages that links in mail lead to: `/verify-email?token=…`, `/confirm-email-change?token=…`
//! and `/cancel-email-change?token=…` (a button each: a mail scanner following the link changes
//! nothing), `/forgot-password` and `/reset-password?token=…`. Their forms carry the pre-session CSRF token like the login form.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use std::collections::HashMap;

use super::handlers::{explain, pre_session, pre_session_ok, with_headers, FormFields};
use super::templates::{alert, layout, sentence, Nav, Page};
use crate::http::extract::Client;
use crate::http::{routes, AppState};

const EXPIRED: &str = "This form has expired. Open the link from the message again.";

/// A link whose page is one button that POSTs its token back: a mail scanner following the
/// link changes nothing.
pub(super) struct ButtonLink {
    path: &'static str,
    title: &'static str,
    prompt: &'static str,
    button: &'static str,
    done: (&'static str, &'static str),
    done_link: (&'static str, &'static str),
    new_link: (&'static str, &'static str),
}

/// `/verify-email?token=…`: confirms the address.
pub(super) const VERIFY: ButtonLink = ButtonLink {
    path: routes::VERIFY_EMAIL_PAGE,
    title: "Confirm your email address",
    prompt: "Press the button to confirm that this address is yours.",
    button: "Confirm",
    done: ("Address confirmed", "Your email address is confirmed."),
    done_link: ("/dashboard", "Continue"),
    new_link: ("/settings", "Ask for a new link in your settings"),
};

/// `/confirm-email-change?token=…`: moves the account to this address.
pub(super) const CONFIRM_CHANGE: ButtonLink = ButtonLink {
    path: routes::CONFIRM_EMAIL_CHANGE_PAGE,
    title: "Confirm your new email address",
    prompt: "Press the button to move your account to this address.",
    button: "Move my account here",
    done: (
        "Address changed",
        "Your account uses this address from now on.",
    ),
    done_link: ("/dashboard", "Continue"),
    new_link: ("/settings", "Ask for the change again in your settings"),
};

/// `/cancel-email-change?token=…`: undoes a move, before or after it happened.
pub(super) const CANCEL_CHANGE: ButtonLink = ButtonLink {
    path: routes::CANCEL_EMAIL_CHANGE_PAGE,
    title: "Cancel the change of address",
    prompt: "Press the button to keep this address for your account. Every session of the \
             account ends; change your password afterwards.",
    button: "Cancel the change",
    done: (
        "Change cancelled",
        "Your account keeps this address, and every session of it has ended. Log in and \
         change your password.",
    ),
    done_link: ("/forgot-password", "Set a new password"),
    new_link: ("/login", "Log in"),
};

fn button_form(link: &ButtonLink, token: &str, csrf: &str, error: Option<&str>) -> Markup {
    layout(
        link.title,
        Nav::None,
        None,
        html! {
            h1 { (link.title) }
            (alert(error, None))
            form.card method="post" action=(link.path) {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="token" value=(token);
                p { (link.prompt) }
                button type="submit" { (link.button) }
            }
        },
    )
}

/// `GET` of a button link's page.
pub(super) async fn button_page(
    link: &ButtonLink,
    state: &AppState,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
) -> Response {
    let token = q.get("token").map(String::as_str).unwrap_or_default();
    page(state, headers, StatusCode::OK, |csrf| {
        button_form(link, token, csrf, None)
    })
}

/// `POST` of a button link's page: `press` runs with the token once the form is the page's own.
pub(super) async fn press_button<F, Fut>(
    link: &ButtonLink,
    state: &AppState,
    headers: &HeaderMap,
    form: &FormFields,
    press: F,
) -> Response
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), cloakroom::AuthError>>,
{
    let token = form.get("token").to_string();
    if !pre_session_ok(state, headers, form) {
        return page(state, headers, StatusCode::FORBIDDEN, |csrf| {
            button_form(link, &token, csrf, Some(EXPIRED))
        });
    }
    match press(token).await {
        Ok(()) => Page::ok(message(link.done.0, link.done.1, link.done_link)).into_response(),
        Err(e) => link_refused(e, link.new_link),
    }
}

fn message(title: &str, text: &str, link: (&str, &str)) -> Markup {
    layout(
        title,
        Nav::None,
        None,
        html! {
            h1 { (title) }
            p.lead role="status" { (text) }
            p { a href=(link.0) { (link.1) } }
        },
    )
}

fn forgot_form(email: &str, csrf: &str, error: Option<&str>) -> Markup {
    layout(
        "Forgot your password",
        Nav::None,
        None,
        html! {
            h1 { "Forgot your password?" }
            (alert(error, None))
            form.card method="post" action="/forgot-password" {
                input type="hidden" name="csrf" value=(csrf);
                label for="email" { "Email" }
                input #email type="email" name="email" value=(email) autocomplete="username"
                    required autofocus;
                p.help { "We send a link to set a new password if an account uses this address." }
                button type="submit" { "Send the link" }
            }
            p { a href="/login" { "Back to log in" } }
        },
    )
}

fn reset_form(token: &str, csrf: &str, error: Option<&str>) -> Markup {
    let described = error.map(|_| "form-error");
    layout(
        "Choose a new password",
        Nav::None,
        None,
        html! {
            h1 { "Choose a new password" }
            (alert(error, None))
            form.card method="post" action="/reset-password" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="token" value=(token);
                label for="new_password" { "New password" }
                input #new_password type="password" name="new_password"
                    autocomplete="new-password" required minlength="8" autofocus
                    aria-describedby=[described];
                p.help { "Setting it logs you out on every device." }
                button type="submit" { "Set the password" }
            }
        },
    )
}

/// A page with the pre-session cookie it needs.
fn page(
    state: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    body: impl FnOnce(&str) -> Markup,
) -> Response {
    let (csrf, cookie) = pre_session(state, headers);
    let page = Page {
        status,
        body: body(&csrf),
    };
    with_headers(page.into_response(), cookie.as_slice(), None)
}

/// The page of a link that was refused, with where to get a new one.
fn link_refused(e: cloakroom::AuthError, new_link: (&str, &str)) -> Response {
    let (status, text, retry) = explain(e);
    let res = Page {
        status,
        body: message("This link does not work", &text, new_link),
    };
    with_headers(res.into_response(), &[], retry)
}

/// `GET /verify-email?token=…`.
pub(super) async fn verify_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    button_page(&VERIFY, &state, &headers, &q).await
}

/// `POST /verify-email`.
pub(super) async fn verify(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    form: FormFields,
) -> Response {
    let auth = std::sync::Arc::clone(&state.auth);
    press_button(&VERIFY, &state, &headers, &form, |token| async move {
        auth.verify_email(&token, &client).await.map(|_| ())
    })
    .await
}

/// `GET /confirm-email-change?token=…`.
pub(super) async fn confirm_change_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    button_page(&CONFIRM_CHANGE, &state, &headers, &q).await
}

/// `POST /confirm-email-change`.
pub(super) async fn confirm_change(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    form: FormFields,
) -> Response {
    let auth = std::sync::Arc::clone(&state.auth);
    press_button(
        &CONFIRM_CHANGE,
        &state,
        &headers,
        &form,
        |token| async move { auth.confirm_email_change(&token, &client).await.map(|_| ()) },
    )
    .await
}

/// `GET /cancel-email-change?token=…`.
pub(super) async fn cancel_change_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    button_page(&CANCEL_CHANGE, &state, &headers, &q).await
}

/// `POST /cancel-email-change`.
pub(super) async fn cancel_change(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    form: FormFields,
) -> Response {
    let auth = std::sync::Arc::clone(&state.auth);
    press_button(
        &CANCEL_CHANGE,
        &state,
        &headers,
        &form,
        |token| async move { auth.cancel_email_change(&token, &client).await },
    )
    .await
}

/// `GET /forgot-password`.
pub(super) async fn forgot_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    page(&state, &headers, StatusCode::OK, |csrf| {
        forgot_form("", csrf, None)
    })
}

/// `POST /forgot-password`: the same answer whether the address has an account or not.
pub(super) async fn forgot(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    form: FormFields,
) -> Response {
    let email = form.get("email").trim().to_string();
    if !pre_session_ok(&state, &headers, &form) {
        return page(&state, &headers, StatusCode::FORBIDDEN, |csrf| {
            forgot_form(&email, csrf, Some(&sentence(EXPIRED)))
        });
    }
    match state.auth.forgot_password(&email, &client).await {
        Ok(()) => Page::ok(message(
            "Check your mail",
            "If an account uses that address, a link to set a new password is on its way. It \
             works once, for a short while.",
            ("/login", "Back to log in"),
        ))
        .into_response(),
        Err(e) => {
            let (status, text, retry) = explain(e);
            let (csrf, cookie) = pre_session(&state, &headers);
            let res = Page {
                status,
                body: forgot_form(&email, &csrf, Some(&text)),
            };
            with_headers(res.into_response(), cookie.as_slice(), retry)
        }
    }
}

/// `GET /reset-password?token=…`.
pub(super) async fn reset_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let token = q.get("token").cloned().unwrap_or_default();
    page(&state, &headers, StatusCode::OK, |csrf| {
        reset_form(&token, csrf, None)
    })
}

/// `POST /reset-password`: on success, to the login page with a notice.
pub(super) async fn reset(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    form: FormFields,
) -> Response {
    let token = form.get("token").to_string();
    if !pre_session_ok(&state, &headers, &form) {
        return page(&state, &headers, StatusCode::FORBIDDEN, |csrf| {
            reset_form(&token, csrf, Some(EXPIRED))
        });
    }
    match state
        .auth
        .reset_password(&token, form.get("new_password"), &client)
        .await
    {
        Ok(()) => with_headers(Redirect::to("/login?done=reset").into_response(), &[], None),
        Err(e @ cloakroom::AuthError::WeakPassword(_)) => {
            let (status, text, _) = explain(e);
            page(&state, &headers, status, |csrf| {
                reset_form(&token, csrf, Some(&text))
            })
        }
        Err(e) => link_refused(e, ("/forgot-password", "Ask for a new link")),
    }
}
