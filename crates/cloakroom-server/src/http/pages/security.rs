//! `/settings/security`: the user's second factors. Adding an authenticator app shows its secret
//! once, as text and as a QR code drawn here (SVG, no image service), and the first code from the
//! app confirms it; passkeys are added with the pages' one script; recovery codes are shown once;
//! removing a factor or making codes needs a recent login or the current password, as the API
//! does. The newest security events close the page.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use cloakroom::factor::{Factor, FactorId, FactorKind};
use cloakroom::{AuthError, Authenticated};
use maud::{html, Markup, PreEscaped};
use std::collections::HashMap;

use super::access::{session_csrf, PageUser};
use super::handlers::{form_ok, reauth, refused_form, FormFields};
use super::templates::{alert, layout, sentence, when, Nav, Page};
use crate::http::api::auth::renewed_cookie;
use crate::http::error::ApiError;
use crate::http::extract::Client;
use crate::http::AppState;

/// What the page shows besides the list.
enum Extra<'a> {
    Nothing,
    /// A new app to confirm: its id, secret and otpauth URI.
    NewApp(&'a str, &'a str, &'a str),
    /// New recovery codes, shown once.
    Codes(&'a [String]),
}

/// The otpauth URI as a QR code, an SVG of black modules on white.
fn qr_svg(uri: &str) -> Option<String> {
    let code = qrcode::QrCode::new(uri.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(200, 200)
            .quiet_zone(true)
            .build(),
    )
}

fn factor_row(f: &Factor, csrf: &str) -> Markup {
    let kind = match f.kind {
        FactorKind::Totp => "Authenticator app",
        FactorKind::Passkey => "Passkey",
        FactorKind::RecoveryCodes => "Recovery codes",
    };
    html! {
        li.factor {
            strong { (kind) }
            @if let Some(name) = &f.name { " — " (name) }
            @if !f.confirmed { " (not confirmed yet)" }
            br;
            span.muted {
                "Added " (when(f.created_at)) ". "
                @match f.last_used_at {
                    Some(t) => { "Last used " (when(t)) "." }
                    None => { "Never used." }
                }
            }
            form.inline method="post" action={ "/settings/security/factors/" (f.id) "/remove" } {
                input type="hidden" name="csrf" value=(csrf);
                label for={ "pw-" (f.id) } { "Current password (if you logged in over 10 minutes ago)" }
                input id={ "pw-" (f.id) } type="password" name="current_password"
                    autocomplete="current-password";
                button type="submit" { "Remove" }
            }
        }
    }
}

fn page_markup(
    who: &Authenticated,
    csrf: &str,
    factors: &[Factor],
    events: &[cloakroom::events::SecurityEvent],
    extra: &Extra<'_>,
    error: Option<&str>,
    notice: Option<&str>,
) -> Markup {
    let has_second = factors
        .iter()
        .any(|f| f.kind != FactorKind::RecoveryCodes && f.confirmed);
    layout(
        "Security",
        Nav::Settings,
        Some((who, csrf)),
        html! {
            h1 { "Two-step verification" }
            (alert(error, notice))
            @match extra {
                Extra::NewApp(id, secret, uri) => {
                    section.card {
                        h2 { "Add the app" }
                        p { "Scan this code with your authenticator app, or type the key into it." }
                        @if let Some(svg) = qr_svg(uri) {
                            div.qr role="img" aria-label="QR code of the key" { (PreEscaped(svg)) }
                        }
                        p { "Key: " code.private #secret { (secret) } }
                        form method="post" action={ "/settings/security/totp/" (id) "/confirm" } {
                            input type="hidden" name="csrf" value=(csrf);
                            label for="code" { "The 6-digit code the app shows now" }
                            input #code type="text" name="code" inputmode="numeric"
                                autocomplete="one-time-code" required autofocus;
                            button type="submit" { "Confirm" }
                        }
                    }
                }
                Extra::Codes(codes) => {
                    section.card {
                        h2 { "Your recovery codes" }
                        p {
                            "Each code logs you in once if you lose your phone. Keep them somewhere "
                            "safe: they are shown only now. Any older codes no longer work."
                        }
                        ol.codes.private #recovery-codes { @for c in *codes { li { code { (c) } } } }
                    }
                }
                Extra::Nothing => {}
            }
            @if factors.is_empty() {
                p { "You log in with your password only." }
            } @else {
                ul.factors { @for f in factors { (factor_row(f, csrf)) } }
            }
            section.card {
                h2 { "Add an authenticator app" }
                form method="post" action="/settings/security/totp" {
                    input type="hidden" name="csrf" value=(csrf);
                    label for="name" { "Name (for example, the phone it is on)" }
                    input #name type="text" name="name" maxlength="64";
                    label for="totp-password" { "Current password (if you logged in over 10 minutes ago)" }
                    input #totp-password type="password" name="current_password"
                        autocomplete="current-password";
                    button #add-app type="submit" { "Add an app" }
                }
            }
            section.card hidden {
                h2 { "Add a passkey" }
                p { "Sign in with your fingerprint, face or screen lock instead of a password." }
                label for="passkey-name" { "Name (for example, this laptop)" }
                input #passkey-name type="text" maxlength="64";
                label for="passkey-password" { "Current password (if you logged in over 10 minutes ago)" }
                input #passkey-password type="password" autocomplete="current-password";
                button #add-passkey type="button" hidden { "Add a passkey" }
                p.error #passkey-error role="alert" hidden {}
            }
            @if !events.is_empty() {
                section aria-labelledby="events" {
                    h2 #events { "Recent activity" }
                    ul.events {
                        @for e in events {
                            li {
                                (e.kind.describe())
                                @if let Some(d) = &e.detail { " (" (d) ")" }
                                " — " (when(e.at))
                                @if let Some(ip) = &e.ip { ", from " (ip) }
                            }
                        }
                    }
                }
            }
            @if has_second {
                section.card {
                    h2 { "Recovery codes" }
                    form method="post" action="/settings/security/recovery-codes" {
                        input type="hidden" name="csrf" value=(csrf);
                        label for="codes-password" { "Current password (if you logged in over 10 minutes ago)" }
                        input #codes-password type="password" name="current_password"
                            autocomplete="current-password";
                        button #new-codes type="submit" { "Make new recovery codes" }
                    }
                }
            }
        },
    )
}

async fn render(
    state: &AppState,
    who: &Authenticated,
    status: StatusCode,
    extra: Extra<'_>,
    error: Option<&str>,
    notice: Option<&str>,
) -> Response {
    let listed = async {
        Ok::<_, AuthError>((
            state.auth.factors(who).await?,
            state.auth.security_events(who, 20).await?,
        ))
    };
    let (factors, events) = match listed.await {
        Ok(both) => both,
        Err(e) => return super::templates::error_page(&e.into()).into_response(),
    };
    let csrf = session_csrf(&who.session);
    Page {
        status,
        body: page_markup(who, &csrf, &factors, &events, &extra, error, notice),
    }
    .into_response()
}

/// The status and words of an engine error, for the page.
fn explained(e: AuthError) -> (StatusCode, String) {
    let reauth = matches!(e, AuthError::ReauthRequired);
    let api = ApiError::from(e);
    let text = if reauth {
        "Enter your current password to do this.".to_string()
    } else {
        sentence(api.message())
    };
    (api.status(), text)
}

fn notice(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "app_added" => "The app is confirmed: logins now ask for a code from it.",
        "passkey_added" => "The passkey is added: sign in with it, or use it after your password.",
        "removed" => "Removed.",
        _ => return None,
    })
}

pub(super) async fn show(
    State(state): State<AppState>,
    PageUser(who): PageUser,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let done = notice(q.get("done").map(String::as_str));
    render(&state, &who, StatusCode::OK, Extra::Nothing, None, done).await
}

pub(super) async fn add_app(
    State(state): State<AppState>,
    PageUser(who): PageUser,
    form: FormFields,
) -> Response {
    if !form_ok(&who, &form) {
        return refused_form();
    }
    let name = Some(form.get("name").trim())
        .filter(|n| !n.is_empty())
        .map(|n| n.chars().filter(|c| !c.is_control()).take(64).collect());
    match state.auth.enroll_totp(&who, name, reauth(&form)).await {
        Ok(e) => {
            let id = e.factor.id.to_string();
            let extra = Extra::NewApp(&id, e.secret.expose(), e.otpauth_uri.expose());
            render(&state, &who, StatusCode::OK, extra, None, None).await
        }
        Err(e) => {
            let (status, text) = explained(e);
            render(&state, &who, status, Extra::Nothing, Some(&text), None).await
        }
    }
}

pub(super) async fn confirm_app(
    State(state): State<AppState>,
    Client(client): Client,
    PageUser(who): PageUser,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: FormFields,
) -> Response {
    if !form_ok(&who, &form) {
        return refused_form();
    }
    let Ok(id) = id.parse::<FactorId>() else {
        return super::templates::error_page(&ApiError::not_found()).into_response();
    };
    match state
        .auth
        .confirm_totp(&who, id, form.get("code"), &client)
        .await
    {
        Ok(confirmed) => match renewed_cookie(&state, &headers, &confirmed) {
            Ok(cookie) => super::handlers::with_cookies(
                Redirect::to("/settings/security?done=app_added").into_response(),
                &[cookie],
            ),
            Err(e) => super::templates::error_page(&e).into_response(),
        },
        Err(e) => {
            let (status, text) = explained(e);
            render(&state, &who, status, Extra::Nothing, Some(&text), None).await
        }
    }
}

pub(super) async fn new_codes(
    State(state): State<AppState>,
    PageUser(who): PageUser,
    form: FormFields,
) -> Response {
    if !form_ok(&who, &form) {
        return refused_form();
    }
    match state.auth.new_recovery_codes(&who, reauth(&form)).await {
        Ok(codes) => {
            render(
                &state,
                &who,
                StatusCode::OK,
                Extra::Codes(&codes),
                None,
                None,
            )
            .await
        }
        Err(e) => {
            let (status, text) = explained(e);
            render(&state, &who, status, Extra::Nothing, Some(&text), None).await
        }
    }
}

pub(super) async fn remove(
    State(state): State<AppState>,
    PageUser(who): PageUser,
    Path(id): Path<String>,
    form: FormFields,
) -> Response {
    if !form_ok(&who, &form) {
        return refused_form();
    }
    let Ok(id) = id.parse::<FactorId>() else {
        return super::templates::error_page(&ApiError::not_found()).into_response();
    };
    match state.auth.delete_factor(&who, id, reauth(&form)).await {
        Ok(()) => Redirect::to("/settings/security?done=removed").into_response(),
        Err(e) => {
            let (status, text) = explained(e);
            render(&state, &who, status, Extra::Nothing, Some(&text), None).await
        }
    }
}
