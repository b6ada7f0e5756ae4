//! What each page and form does: read the form, check its token, call the engine, and answer
//! with a page or a redirect (303, so a reload never posts twice).

use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use cloakroom::{AuthError, Authenticated, LoginRequest, Reauth, SessionId, Transport};
use std::collections::HashMap;
use url::Url;

use super::access::{
    new_pre_session_token, pre_session_token, safe_next, same_token, session_csrf, PageUser, HOME,
};
use super::templates::{self, sentence, LoginForm, MfaForm, Page, SettingsView};
use crate::http::api::auth::renewed_cookie;
use crate::http::api::sessions::DEFAULT_PAGE;
use crate::http::error::ApiError;
use crate::http::extract::{body_bytes, held_token, Client};
use crate::http::AppState;

/// A form's fields (`application/x-www-form-urlencoded`), each at most once.
pub struct FormFields(HashMap<String, String>);

impl FormFields {
    pub(super) fn get(&self, name: &str) -> &str {
        self.0.get(name).map_or("", String::as_str)
    }
}

impl FromRequest<AppState> for FormFields {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                ct.split(';').next().is_some_and(|m| {
                    m.trim()
                        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
                })
            });
        if !form {
            return Err(templates::error_page(&ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "this form must be sent as a web form",
            ))
            .into_response());
        }
        let bytes = body_bytes(req, state)
            .await
            .map_err(|e| templates::error_page(&e).into_response())?;
        let mut fields = HashMap::new();
        for (k, v) in url::form_urlencoded::parse(&bytes) {
            if fields.insert(k.into_owned(), v.into_owned()).is_some() {
                return Err(templates::error_page(&ApiError::bad_request(
                    "invalid_request",
                    "a form field was sent twice",
                ))
                .into_response());
            }
        }
        Ok(Self(fields))
    }
}

/// The message shown for a refused form that did not carry its token.
const EXPIRED_FORM: &str =
    "this form has expired or did not come from this site; reload the page and try again";

fn notice(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "signed_up" => "Your account is ready. Log in to continue.",
        "logged_out" => "You have logged out.",
        "everywhere" => "You have logged out on every device.",
        "password" => "Your password has been changed. Your other devices have been logged out.",
        "ended" => "That device has been logged out.",
        "expired" => "That sign-in attempt has expired. Log in again.",
        "reset" => "Your password is set, and every device was logged out. Log in with it.",
        "verify_sent" => "A new confirmation link is on its way to your address.",
        "email_change_sent" => {
            "A link that completes the change is on its way to the new address. Your current \
             address was told, with a link that undoes it."
        }
        "deleted" => "Your account is deleted.",
        _ => return None,
    })
}

/// The error of an engine call, in words for the page, with the wait when there is one.
pub(super) fn explain(e: AuthError) -> (StatusCode, String, Option<i64>) {
    let api = ApiError::from(e);
    let mut text = sentence(api.message());
    if let Some(secs) = api.retry_after_secs() {
        text.push_str(&format!(
            " Try again in {secs} second{}.",
            if secs == 1 { "" } else { "s" }
        ));
    }
    (api.status(), text, api.retry_after_secs())
}

/// `res` setting `cookies`, never cached.
pub(super) fn with_cookies(res: Response, cookies: &[String]) -> Response {
    with_headers(res, cookies, None)
}

/// `res` setting `cookies` (and `Retry-After` when given), never cached.
pub(super) fn with_headers(
    mut res: Response,
    cookies: &[String],
    retry_after: Option<i64>,
) -> Response {
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            res.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    if let Some(secs) = retry_after {
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// A redirect after logging out: the session cookie cleared, and the browser told to drop
/// what it keeps of this site. With a cookie shared by a parent domain, "cookies" is left out:
/// it would clear the cookies of every app under that domain, not only ours.
fn logged_out(state: &AppState, to: &str) -> Response {
    let mut res = with_headers(
        Redirect::to(to).into_response(),
        &[state.rules.cookie().clear()],
        None,
    );
    let clear = if state.rules.cookie().domain().is_some() {
        "\"cache\""
    } else {
        "\"cache\", \"cookies\""
    };
    res.headers_mut()
        .insert("clear-site-data", HeaderValue::from_static(clear));
    res
}

/// A page whose form may end in a redirect to an allowed host (`rd=`): its `form-action`
/// names those hosts, or the browser would stop at the redirect.
pub(super) fn may_return_elsewhere(state: &AppState, mut res: Response) -> Response {
    res.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        state.return_to.page_csp().clone(),
    );
    res
}

/// The signed-in user, if the request carries a valid session (for pages anyone may see).
async fn signed_in(state: &AppState, headers: &HeaderMap) -> Option<Authenticated> {
    state.rules.browser_session(&state.auth, headers).await.ok()
}

/// The pre-session CSRF token of a request, or a new one with the cookie that sets it.
pub(super) fn pre_session(state: &AppState, headers: &HeaderMap) -> (String, Option<String>) {
    let secure = state.rules.cookie().is_secure();
    match pre_session_token(headers, secure) {
        Some(t) => (t, None),
        None => {
            let (t, cookie) = new_pre_session_token(secure);
            (t, Some(cookie))
        }
    }
}

pub(super) fn pre_session_ok(state: &AppState, headers: &HeaderMap, form: &FormFields) -> bool {
    pre_session_token(headers, state.rules.cookie().is_secure())
        .is_some_and(|t| same_token(&t, form.get("csrf")))
}

pub(super) async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let next = q.get("next").and_then(|n| safe_next(n));
    let rd = q.get("rd").and_then(|r| state.return_to.check(r));
    let rd = rd.as_ref().map(Url::as_str);
    if signed_in(&state, &headers).await.is_some() {
        return Redirect::to(rd.or(next).unwrap_or(HOME)).into_response();
    }
    let (csrf, cookie) = pre_session(&state, &headers);
    let page = Page::ok(templates::login(&LoginForm {
        email: "",
        next,
        rd,
        remember: false,
        csrf: &csrf,
        error: None,
        notice: notice(q.get("done").map(String::as_str)),
    }));
    may_return_elsewhere(
        &state,
        with_headers(page.into_response(), cookie.as_slice(), None),
    )
}

pub(super) async fn login(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    form: FormFields,
) -> Response {
    let email = form.get("email").trim().to_string();
    let next = safe_next(form.get("next"));
    let rd = state.return_to.check(form.get("rd"));
    let rd = rd.as_ref().map(Url::as_str);
    let remember = form.get("remember") == "1";
    let failed = |status: StatusCode, error: &str, retry: Option<i64>| {
        let (csrf, cookie) = pre_session(&state, &headers);
        let page = Page {
            status,
            body: templates::login(&LoginForm {
                email: &email,
                next,
                rd,
                remember,
                csrf: &csrf,
                error: Some(error),
                notice: None,
            }),
        };
        may_return_elsewhere(
            &state,
            with_headers(page.into_response(), cookie.as_slice(), retry),
        )
    };
    if !pre_session_ok(&state, &headers, &form) {
        return failed(StatusCode::FORBIDDEN, &sentence(EXPIRED_FORM), None);
    }
    let outcome = state
        .auth
        .login(LoginRequest {
            email: email.clone(),
            password: form.get("password").to_string(),
            remember,
            transport: Transport::Cookie,
            client,
            current_token: held_token(&headers, &state),
            dpop_jkt: None,
        })
        .await;
    match outcome {
        Ok(outcome) => signed_in_to(&state, &outcome, rd.or(next).unwrap_or(HOME)),
        Err(AuthError::MfaRequired { mfa_token, .. }) => {
            let (csrf, cookie) = pre_session(&state, &headers);
            let page = Page::ok(templates::login_mfa(&MfaForm {
                mfa_token: mfa_token.expose(),
                next,
                rd,
                csrf: &csrf,
                error: None,
            }));
            may_return_elsewhere(
                &state,
                with_headers(page.into_response(), cookie.as_slice(), None),
            )
        }
        Err(e) => {
            let (status, text, retry) = explain(e);
            failed(status, &text, retry)
        }
    }
}

/// The redirect after a completed login, with the new session's cookie.
fn signed_in_to(state: &AppState, outcome: &cloakroom::LoginOutcome, to: &str) -> Response {
    let cookie = state.rules.cookie().for_session(
        outcome.token.expose(),
        &outcome.session,
        state.auth.now(),
    );
    let mut res = with_headers(Redirect::to(to).into_response(), &[cookie], None);
    if let Some(offer) = crate::http::api::dbsc::offer(state, &outcome.session) {
        res.headers_mut()
            .insert(cloakroom::dbsc::REGISTRATION, offer);
    }
    res
}

/// `POST /login/mfa`: the second step of the login form. Six digits are an authenticator
/// app's code; anything else is tried as a recovery code.
pub(super) async fn login_mfa(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    form: FormFields,
) -> Response {
    let next = safe_next(form.get("next"));
    let rd = state.return_to.check(form.get("rd"));
    let rd = rd.as_ref().map(Url::as_str);
    let token = form.get("mfa_token");
    let failed = |status: StatusCode, error: &str, retry: Option<i64>| {
        let (csrf, cookie) = pre_session(&state, &headers);
        let page = Page {
            status,
            body: templates::login_mfa(&MfaForm {
                mfa_token: token,
                next,
                rd,
                csrf: &csrf,
                error: Some(error),
            }),
        };
        may_return_elsewhere(
            &state,
            with_headers(page.into_response(), cookie.as_slice(), retry),
        )
    };
    if !pre_session_ok(&state, &headers, &form) {
        return failed(StatusCode::FORBIDDEN, &sentence(EXPIRED_FORM), None);
    }
    let typed: String = form
        .get("code")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let proof = if typed.len() == 6 && typed.bytes().all(|b| b.is_ascii_digit()) {
        cloakroom::SecondFactor::Code(typed)
    } else {
        cloakroom::SecondFactor::RecoveryCode(typed)
    };
    let outcome = state
        .auth
        .login_mfa(cloakroom::MfaLogin {
            mfa_token: token.to_string(),
            proof,
            client,
            current_token: held_token(&headers, &state),
            dpop_jkt: None,
        })
        .await;
    match outcome {
        Ok(outcome) => signed_in_to(&state, &outcome, rd.or(next).unwrap_or(HOME)),
        Err(AuthError::InvalidMfaToken) => Redirect::to("/login?done=expired").into_response(),
        Err(e) => {
            let (status, text, retry) = explain(e);
            failed(status, &text, retry)
        }
    }
}

pub(super) async fn signup_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if signed_in(&state, &headers).await.is_some() {
        return Redirect::to(HOME).into_response();
    }
    let (csrf, cookie) = pre_session(&state, &headers);
    let page = Page::ok(templates::signup("", &csrf, None));
    with_headers(page.into_response(), cookie.as_slice(), None)
}

pub(super) async fn signup(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    form: FormFields,
) -> Response {
    let email = form.get("email").trim().to_string();
    let failed = |status: StatusCode, error: &str, retry: Option<i64>| {
        let (csrf, cookie) = pre_session(&state, &headers);
        let page = Page {
            status,
            body: templates::signup(&email, &csrf, Some(error)),
        };
        with_headers(page.into_response(), cookie.as_slice(), retry)
    };
    if !pre_session_ok(&state, &headers, &form) {
        return failed(StatusCode::FORBIDDEN, &sentence(EXPIRED_FORM), None);
    }
    match state
        .auth
        .signup(&email, form.get("password"), &client)
        .await
    {
        Ok(_) => Redirect::to("/login?done=signed_up").into_response(),
        Err(e) => {
            let (status, text, retry) = explain(e);
            failed(status, &text, retry)
        }
    }
}

pub(super) async fn dashboard(PageUser(who): PageUser) -> Page {
    Page::ok(templates::dashboard(&who, &session_csrf(&who.session)))
}

pub(super) async fn profile(PageUser(who): PageUser) -> Page {
    Page::ok(templates::profile(&who, &session_csrf(&who.session)))
}

/// The settings page, with an outcome to show.
async fn settings_page(
    state: &AppState,
    who: &Authenticated,
    status: StatusCode,
    error: Option<&str>,
    notice: Option<&str>,
) -> Response {
    settings_page_from(state, who, status, error, notice, 0).await
}

/// The settings page with the session list from its `from`-th entry, a page at a time.
async fn settings_page_from(
    state: &AppState,
    who: &Authenticated,
    status: StatusCode,
    error: Option<&str>,
    notice: Option<&str>,
    from: usize,
) -> Response {
    let sessions = match state.auth.sessions(who).await {
        Ok(s) => s,
        Err(e) => return templates::error_page(&e.into()).into_response(),
    };
    let total = sessions.len();
    let from = from.min(total.saturating_sub(1));
    let shown = &sessions[from..(from + DEFAULT_PAGE).min(total)];
    Page {
        status,
        body: templates::settings(&SettingsView {
            who,
            sessions: shown,
            from,
            total,
            newer: (from > 0).then(|| from.saturating_sub(DEFAULT_PAGE)),
            older: (from + shown.len() < total).then_some(from + shown.len()),
            csrf: &session_csrf(&who.session),
            error,
            notice,
        }),
    }
    .into_response()
}

pub(super) async fn settings(
    State(state): State<AppState>,
    PageUser(who): PageUser,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let done = notice(q.get("done").map(String::as_str));
    let from = q.get("from").and_then(|f| f.parse().ok()).unwrap_or(0);
    settings_page_from(&state, &who, StatusCode::OK, None, done, from).await
}

/// Whether a signed-in form carries the session's token.
/// Whether a signed-in form carries its session's CSRF token.
pub(super) fn form_ok(who: &Authenticated, form: &FormFields) -> bool {
    same_token(form.get("csrf"), &session_csrf(&who.session))
}

/// The answer to a signed-in form without its token.
pub(super) fn refused_form() -> Response {
    let e = ApiError::new(StatusCode::FORBIDDEN, "csrf_token", EXPIRED_FORM);
    templates::error_page(&e).into_response()
}

/// The form's proof of a fresh login: its current password, if typed.
pub(super) fn reauth(form: &FormFields) -> Reauth {
    match form.get("current_password") {
        "" => Reauth::None,
        p => Reauth::Password(p.to_string()),
    }
}

/// `GET /logout?rd=…`: the page a logout link (from an app on another host, say) opens. It asks
/// before logging out, so that a link or an image elsewhere cannot log anyone out; without a
/// session it goes straight on.
pub(super) async fn logout_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let rd = q.get("rd").and_then(|r| state.return_to.check(r));
    let rd = rd.as_ref().map(Url::as_str);
    match signed_in(&state, &headers).await {
        None => Redirect::to(rd.unwrap_or("/login?done=logged_out")).into_response(),
        Some(who) => {
            let page = Page::ok(templates::logout(&who, &session_csrf(&who.session), rd));
            may_return_elsewhere(&state, page.into_response())
        }
    }
}

pub(super) async fn logout(
    State(state): State<AppState>,
    PageUser(who): PageUser,
    form: FormFields,
) -> Response {
    if !form_ok(&who, &form) {
        return refused_form();
    }
    let rd = state.return_to.check(form.get("rd"));
    match state.auth.logout(&who).await {
        Ok(()) => logged_out(
            &state,
            rd.as_ref().map_or("/login?done=logged_out", Url::as_str),
        ),
        Err(e) => templates::error_page(&e.into()).into_response(),
    }
}

pub(super) async fn end_session(
    State(state): State<AppState>,
    PageUser(who): PageUser,
    Path(id): Path<String>,
    form: FormFields,
) -> Response {
    if !form_ok(&who, &form) {
        return refused_form();
    }
    let Ok(id) = id.parse::<SessionId>() else {
        return templates::error_page(&ApiError::not_found()).into_response();
    };
    match state.auth.end_session(&who, id, reauth(&form)).await {
        Ok(()) if id == who.session.id => logged_out(&state, "/login?done=logged_out"),
        Ok(()) => Redirect::to("/settings?done=ended").into_response(),
        Err(e) => {
            let msg = "To log out another device, you need to have logged in within the last \
                       10 minutes. Log out and in again, or use “Log out everywhere” with your \
                       password.";
            settings_refusal(&state, &who, e, msg).await
        }
    }
}

pub(super) async fn logout_everywhere(
    State(state): State<AppState>,
    PageUser(who): PageUser,
    form: FormFields,
) -> Response {
    if !form_ok(&who, &form) {
        return refused_form();
    }
    match state.auth.logout_all(&who, reauth(&form)).await {
        Ok(_) => logged_out(&state, "/login?done=everywhere"),
        Err(e) => {
            let msg = "Enter your current password to log out everywhere.";
            settings_refusal(&state, &who, e, msg).await
        }
    }
}

pub(super) async fn change_password(
    State(state): State<AppState>,
    PageUser(who): PageUser,
    headers: HeaderMap,
    form: FormFields,
) -> Response {
    if !form_ok(&who, &form) {
        return refused_form();
    }
    if form.get("new_password") != form.get("new_password_again") {
        let msg = "The two new passwords are not the same.";
        return settings_page(&state, &who, StatusCode::BAD_REQUEST, Some(msg), None).await;
    }
    let changed = state
        .auth
        .change_password(&who, form.get("current_password"), form.get("new_password"))
        .await;
    match changed {
        Ok(changed) => {
            let cookies = match renewed_cookie(&state, &headers, &changed) {
                Ok(cookie) => vec![cookie],
                Err(e) => return templates::error_page(&e).into_response(),
            };
            with_headers(
                Redirect::to("/settings?done=password").into_response(),
                &cookies,
                None,
            )
        }
        // The current password is always typed here: no fresh-login message is needed.
        Err(e) => settings_refusal(&state, &who, e, "").await,
    }
}

/// The settings page saying why a form was refused: `reauth` when it lacked the password a
/// fresh login needs, else the error in words (with its wait).
async fn settings_refusal(
    state: &AppState,
    who: &Authenticated,
    e: AuthError,
    reauth: &str,
) -> Response {
    if matches!(e, AuthError::ReauthRequired) {
        return settings_page(state, who, StatusCode::FORBIDDEN, Some(reauth), None).await;
    }
    let (status, text, retry) = explain(e);
    let res = settings_page(state, who, status, Some(&text), None).await;
    with_headers(res, &[], retry)
}

/// `POST /settings/email/verify`: mails a new link that confirms the address.
pub(super) async fn request_verification(
    State(state): State<AppState>,
    PageUser(who): PageUser,
    form: FormFields,
) -> Response {
    if !form_ok(&who, &form) {
        return refused_form();
    }
    match state.auth.request_email_verification(&who).await {
        Ok(()) => Redirect::to("/settings?done=verify_sent").into_response(),
        Err(e) => settings_refusal(&state, &who, e, "").await,
    }
}

/// `POST /settings/email`: starts moving the account to another address.
pub(super) async fn change_email(
    State(state): State<AppState>,
    PageUser(who): PageUser,
    form: FormFields,
) -> Response {
    if !form_ok(&who, &form) {
        return refused_form();
    }
    match state
        .auth
        .request_email_change(&who, form.get("new_email").trim(), reauth(&form))
        .await
    {
        Ok(()) => Redirect::to("/settings?done=email_change_sent").into_response(),
        Err(e) => {
            let msg = "Enter your current password to change your email address.";
            settings_refusal(&state, &who, e, msg).await
        }
    }
}

/// `POST /settings/account/delete`: deletes the account, with the password typed again.
pub(super) async fn delete_account(
    State(state): State<AppState>,
    PageUser(who): PageUser,
    form: FormFields,
) -> Response {
    if !form_ok(&who, &form) {
        return refused_form();
    }
    match state.auth.delete_account(&who, reauth(&form)).await {
        Ok(()) => logged_out(&state, "/login?done=deleted"),
        Err(e) => {
            let msg = "Enter your current password to delete your account.";
            settings_refusal(&state, &who, e, msg).await
        }
    }
}
