//! `/step-up`: where forward-auth sends a browser whose login is too weak or too old for the
//! page it asked for. The user proves themselves again (password, a code, or both; a passkey
//! through the pages' script and the API) and continues in a new session, back where they were
//! going.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use cloakroom::Authenticated;
use std::collections::HashMap;

use super::access::{safe_next, session_csrf, PageUser, HOME};
use super::handlers::{
    explain, form_ok, may_return_elsewhere, refused_form, with_headers, FormFields,
};
use super::templates::{self, Page};
use crate::http::api::auth::renewed_cookie;
use crate::http::extract::Client;
use crate::http::AppState;

/// Where a step-up form was asked to return, and what it was asked for.
struct StepUpTarget {
    next: Option<String>,
    rd: Option<String>,
    aal2: bool,
}

impl StepUpTarget {
    fn read(state: &AppState, get: impl Fn(&str) -> Option<String>) -> Self {
        Self {
            next: get("next").and_then(|n| safe_next(&n).map(str::to_string)),
            rd: get("rd").and_then(|r| state.return_to.check(&r).map(String::from)),
            aal2: get("aal")
                .is_some_and(|a| cloakroom::Acr::parse(&a) == Some(cloakroom::Acr::Aal2)),
        }
    }

    fn landing(&self) -> &str {
        self.rd.as_deref().or(self.next.as_deref()).unwrap_or(HOME)
    }
}

async fn step_up_page(
    state: &AppState,
    who: &Authenticated,
    target: &StepUpTarget,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let has_app = match state.auth.factors(who).await {
        Ok(factors) => factors
            .iter()
            .any(|f| f.kind == cloakroom::factor::FactorKind::Totp && f.confirmed),
        Err(e) => return templates::error_page(&e.into()).into_response(),
    };
    let page = Page {
        status,
        body: templates::step_up(&templates::StepUpForm {
            who,
            csrf: &session_csrf(&who.session),
            next: target.next.as_deref(),
            rd: target.rd.as_deref(),
            aal2: target.aal2,
            has_app,
            error,
        }),
    };
    may_return_elsewhere(state, page.into_response())
}

/// `GET /step-up?next=…|rd=…&aal=2&max_age=S`: where forward-auth sends a browser whose login
/// is too weak or too old for the page it asked for.
pub(super) async fn step_up(
    State(state): State<AppState>,
    PageUser(who): PageUser,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let target = StepUpTarget::read(&state, |k| q.get(k).cloned());
    step_up_page(&state, &who, &target, StatusCode::OK, None).await
}

/// `POST /step-up`: the password, a code, or both; the browser continues in a new session.
pub(super) async fn step_up_post(
    State(state): State<AppState>,
    Client(client): Client,
    PageUser(who): PageUser,
    headers: HeaderMap,
    form: FormFields,
) -> Response {
    if !form_ok(&who, &form) {
        return refused_form();
    }
    let target = StepUpTarget::read(&state, |k| {
        Some(form.get(k).to_string()).filter(|v| !v.is_empty())
    });
    let password = Some(form.get("password")).filter(|p| !p.is_empty());
    let code: String = form
        .get("code")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let second = match code.as_str() {
        "" => None,
        c if c.len() == 6 && c.bytes().all(|b| b.is_ascii_digit()) => {
            Some(cloakroom::SecondFactor::Code(code))
        }
        _ => Some(cloakroom::SecondFactor::RecoveryCode(code)),
    };
    if password.is_none() && second.is_none() {
        let msg = "Enter your password or a code.";
        return step_up_page(&state, &who, &target, StatusCode::BAD_REQUEST, Some(msg)).await;
    }
    match state
        .auth
        .reauthenticate(&who, password, second, &client)
        .await
    {
        Ok(stepped) => match renewed_cookie(&state, &headers, &stepped) {
            Ok(cookie) => with_headers(
                Redirect::to(target.landing()).into_response(),
                &[cookie],
                None,
            ),
            Err(e) => templates::error_page(&e).into_response(),
        },
        Err(e) => {
            let (status, text, retry) = explain(e);
            let res = step_up_page(&state, &who, &target, status, Some(&text)).await;
            with_headers(res, &[], retry)
        }
    }
}
