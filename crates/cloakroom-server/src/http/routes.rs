//! Every route's path, once. The routers, the metrics labels and the guard's hot paths use these
//! names, and a test holds `openapi.json` to [`ROUTES`]: every API route and method is
//! documented there, and nothing else is.

/// `POST`: a new account.
pub const SIGNUP: &str = "/auth/signup";
/// `POST`: a cookie session.
pub const LOGIN: &str = "/auth/login";
/// `POST`: the second step of a login that answered 202.
pub const LOGIN_MFA: &str = "/auth/login/mfa";
/// `POST`: mails the caller a link that confirms their address.
pub const EMAIL_VERIFY_REQUEST: &str = "/auth/email/verify/request";
/// `POST`: confirms an address with the token of its link.
pub const EMAIL_VERIFY: &str = "/auth/email/verify";
/// `POST`: starts moving the caller's account to another address.
pub const EMAIL_CHANGE: &str = "/auth/email/change";
/// `POST`: completes the move with the token of the link sent to the new address.
pub const EMAIL_CHANGE_CONFIRM: &str = "/auth/email/change/confirm";
/// `POST`: undoes it with the token of the link sent to the old address.
pub const EMAIL_CHANGE_CANCEL: &str = "/auth/email/change/cancel";
/// `POST`: mails a password reset link, if the address is an account's.
pub const PASSWORD_FORGOT: &str = "/auth/password/forgot";
/// `POST`: sets a new password with the token of a reset link.
pub const PASSWORD_RESET: &str = "/auth/password/reset";
/// `GET` a button that confirms an address (the link in the mail), `POST` it.
pub const VERIFY_EMAIL_PAGE: &str = "/verify-email";
/// `GET` a button that confirms a change of address (the link sent to the new one), `POST` it.
pub const CONFIRM_EMAIL_CHANGE_PAGE: &str = "/confirm-email-change";
/// `GET` a button that cancels it (the link sent to the old address), `POST` it.
pub const CANCEL_EMAIL_CHANGE_PAGE: &str = "/cancel-email-change";
/// `GET` the form that asks for a reset link, `POST` it.
pub const FORGOT_PASSWORD_PAGE: &str = "/forgot-password";
/// `GET` the form that sets a new password with a reset link, `POST` it.
pub const RESET_PASSWORD_PAGE: &str = "/reset-password";
/// `DELETE`: deletes the caller's account (with the password or a second factor).
pub const ACCOUNT: &str = "/auth/account";
/// `GET`: the caller's own data as JSON.
pub const ACCOUNT_EXPORT: &str = "/auth/account/export";
/// `GET`: the caller's recent security events.
pub const EVENTS: &str = "/auth/events";
/// `GET`: the caller's second factors.
pub const FACTORS: &str = "/auth/factors";
/// `DELETE`: removes one.
pub const FACTOR: &str = "/auth/factors/{id}";
/// `POST`: starts adding an authenticator app.
pub const TOTP_FACTORS: &str = "/auth/factors/totp";
/// `POST`: confirms it with a first code.
pub const TOTP_CONFIRM: &str = "/auth/factors/totp/{id}/confirm";
/// `POST`: a new set of recovery codes.
pub const RECOVERY_CODES: &str = "/auth/factors/recovery-codes";
/// `POST`: the creation options of a new passkey.
pub const PASSKEY_REGISTER_OPTIONS: &str = "/auth/passkeys/register/options";
/// `POST`: registers it.
pub const PASSKEY_REGISTER: &str = "/auth/passkeys/register";
/// `POST`: the request options of a passkey login.
pub const PASSKEY_LOGIN_OPTIONS: &str = "/auth/passkeys/login/options";
/// `POST`: a passwordless login with a passkey.
pub const PASSKEY_LOGIN: &str = "/auth/passkeys/login";
/// `POST`: ends the caller's session.
pub const LOGOUT: &str = "/auth/logout";
/// `POST`: ends all of the user's sessions.
pub const LOGOUT_ALL: &str = "/auth/logout-all";
/// `GET`: who the caller is.
pub const WHOAMI: &str = "/auth/whoami";
/// `GET`: the user's sessions.
pub const SESSIONS: &str = "/auth/sessions";
/// `DELETE`: ends one of them.
pub const SESSION: &str = "/auth/sessions/{id}";
/// `POST`: a new password.
pub const PASSWORD: &str = "/auth/password";
/// `POST`: step-up, proving oneself again.
pub const REAUTHENTICATE: &str = "/auth/reauthenticate";
/// `POST`: the token endpoint.
pub const TOKEN: &str = "/auth/token";
/// `GET`: the public signing keys.
pub const JWKS: &str = "/.well-known/jwks.json";
/// `POST`: binds a browser session to the browser's key (DBSC registration).
pub const DBSC_REGISTER: &str = "/auth/dbsc/register";
/// `POST`: a bound browser session's proof, for a fresh bound cookie (DBSC refresh).
pub const DBSC_REFRESH: &str = "/auth/dbsc/refresh";
/// `GET`: which origins may register DBSC sessions for the whole site (with a cookie domain).
pub const DBSC_WELL_KNOWN: &str = "/.well-known/device-bound-sessions";
/// `GET`: forward-auth for proxies.
pub const VERIFY: &str = "/auth/verify";
/// `GET`: the revocation feed for remote verifiers.
pub const REVOCATIONS: &str = "/auth/revocations";
/// `GET`: liveness.
pub const HEALTHZ: &str = "/healthz";
/// `GET`: readiness.
pub const READYZ: &str = "/readyz";
/// `GET`: Prometheus metrics.
pub const METRICS: &str = "/metrics";
/// `GET`: the API's OpenAPI document.
pub const OPENAPI: &str = "/openapi.json";
/// `GET`: redirects to the dashboard.
pub const ROOT: &str = "/";
/// Pages: sign in.
pub const LOGIN_PAGE: &str = "/login";
/// Pages: second factors.
pub const SECURITY_PAGE: &str = "/settings/security";
/// Pages: adding an authenticator app.
pub const SECURITY_TOTP_PAGE: &str = "/settings/security/totp";
/// Pages: confirming it.
pub const SECURITY_TOTP_CONFIRM_PAGE: &str = "/settings/security/totp/{id}/confirm";
/// Pages: a new set of recovery codes.
pub const SECURITY_CODES_PAGE: &str = "/settings/security/recovery-codes";
/// Pages: removing a factor.
pub const SECURITY_REMOVE_PAGE: &str = "/settings/security/factors/{id}/remove";
/// The pages' one script (passkeys).
pub const SCRIPT: &str = "/static/passkeys.js";
/// Pages: proving oneself again (step-up).
pub const STEP_UP_PAGE: &str = "/step-up";
/// Pages: the second step of signing in.
pub const LOGIN_MFA_PAGE: &str = "/login/mfa";
/// Pages: sign up.
pub const SIGNUP_PAGE: &str = "/signup";
/// Pages: the signed-in home.
pub const DASHBOARD_PAGE: &str = "/dashboard";
/// Pages: the profile.
pub const PROFILE_PAGE: &str = "/profile";
/// Pages: settings.
pub const SETTINGS_PAGE: &str = "/settings";
/// Pages: sign out.
pub const LOGOUT_PAGE: &str = "/logout";
/// Pages: end one session.
pub const END_SESSION_PAGE: &str = "/settings/sessions/{id}/end";
/// Pages: end every session.
pub const LOGOUT_EVERYWHERE_PAGE: &str = "/settings/logout-everywhere";
/// Pages: change the password.
pub const PASSWORD_PAGE: &str = "/settings/password";
/// Pages: mail a new link that confirms the address.
pub const EMAIL_VERIFY_REQUEST_PAGE: &str = "/settings/email/verify";
/// Pages: move the account to another address.
pub const EMAIL_CHANGE_PAGE: &str = "/settings/email";
/// Pages: delete the account.
pub const DELETE_ACCOUNT_PAGE: &str = "/settings/account/delete";
/// The pages' stylesheet.
pub const STYLESHEET: &str = "/static/style.css";

/// A route: its path (`{name}` stands for one path segment), its methods, and whether it is
/// part of the JSON API that `openapi.json` describes.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// The path, as the router writes it.
    pub path: &'static str,
    /// Its methods (`HEAD` comes with `GET`).
    pub methods: &'static [&'static str],
    /// Described in `openapi.json`.
    pub api: bool,
}

const fn api(path: &'static str, methods: &'static [&'static str]) -> Route {
    Route {
        path,
        methods,
        api: true,
    }
}

const fn page(path: &'static str, methods: &'static [&'static str]) -> Route {
    Route {
        path,
        methods,
        api: false,
    }
}

/// Every route the server answers (`/metrics` may be on a listener of its own).
pub const ROUTES: &[Route] = &[
    api(SIGNUP, &["POST"]),
    api(LOGIN, &["POST"]),
    api(LOGIN_MFA, &["POST"]),
    api(PASSKEY_REGISTER_OPTIONS, &["POST"]),
    api(PASSKEY_REGISTER, &["POST"]),
    api(PASSKEY_LOGIN_OPTIONS, &["POST"]),
    api(PASSKEY_LOGIN, &["POST"]),
    api(EVENTS, &["GET"]),
    api(EMAIL_VERIFY_REQUEST, &["POST"]),
    api(EMAIL_VERIFY, &["POST"]),
    api(EMAIL_CHANGE, &["POST"]),
    api(EMAIL_CHANGE_CONFIRM, &["POST"]),
    api(EMAIL_CHANGE_CANCEL, &["POST"]),
    api(PASSWORD_FORGOT, &["POST"]),
    api(PASSWORD_RESET, &["POST"]),
    api(ACCOUNT, &["DELETE"]),
    api(ACCOUNT_EXPORT, &["GET"]),
    api(FACTORS, &["GET"]),
    api(TOTP_FACTORS, &["POST"]),
    api(TOTP_CONFIRM, &["POST"]),
    api(RECOVERY_CODES, &["POST"]),
    // After the fixed paths beside it, which `route_of` must find first.
    api(FACTOR, &["DELETE"]),
    api(LOGOUT, &["POST"]),
    api(LOGOUT_ALL, &["POST"]),
    api(WHOAMI, &["GET"]),
    api(SESSIONS, &["GET"]),
    api(SESSION, &["DELETE"]),
    api(PASSWORD, &["POST"]),
    api(REAUTHENTICATE, &["POST"]),
    api(TOKEN, &["POST"]),
    api(DBSC_REGISTER, &["POST"]),
    api(DBSC_REFRESH, &["POST"]),
    api(DBSC_WELL_KNOWN, &["GET"]),
    api(JWKS, &["GET"]),
    api(VERIFY, &["GET"]),
    api(REVOCATIONS, &["GET"]),
    api(HEALTHZ, &["GET"]),
    api(READYZ, &["GET"]),
    api(METRICS, &["GET"]),
    api(OPENAPI, &["GET"]),
    page(ROOT, &["GET"]),
    page(LOGIN_PAGE, &["GET", "POST"]),
    page(LOGIN_MFA_PAGE, &["GET", "POST"]),
    page(STEP_UP_PAGE, &["GET", "POST"]),
    page(SECURITY_PAGE, &["GET"]),
    page(SECURITY_TOTP_PAGE, &["POST"]),
    page(SECURITY_TOTP_CONFIRM_PAGE, &["POST"]),
    page(SECURITY_CODES_PAGE, &["POST"]),
    page(SECURITY_REMOVE_PAGE, &["POST"]),
    page(SIGNUP_PAGE, &["GET", "POST"]),
    page(DASHBOARD_PAGE, &["GET"]),
    page(PROFILE_PAGE, &["GET"]),
    page(SETTINGS_PAGE, &["GET"]),
    page(LOGOUT_PAGE, &["GET", "POST"]),
    page(END_SESSION_PAGE, &["POST"]),
    page(LOGOUT_EVERYWHERE_PAGE, &["POST"]),
    page(PASSWORD_PAGE, &["POST"]),
    page(EMAIL_VERIFY_REQUEST_PAGE, &["POST"]),
    page(EMAIL_CHANGE_PAGE, &["POST"]),
    page(DELETE_ACCOUNT_PAGE, &["POST"]),
    page(STYLESHEET, &["GET"]),
    page(SCRIPT, &["GET"]),
    page(VERIFY_EMAIL_PAGE, &["GET", "POST"]),
    page(CONFIRM_EMAIL_CHANGE_PAGE, &["GET", "POST"]),
    page(CANCEL_EMAIL_CHANGE_PAGE, &["GET", "POST"]),
    page(FORGOT_PASSWORD_PAGE, &["GET", "POST"]),
    page(RESET_PASSWORD_PAGE, &["GET", "POST"]),
];

/// What a session whose address must be confirmed first (`Auth::verification_due`) may still
/// reach: asking for a new link, correcting the address, its own data, and leaving.
pub const VERIFICATION: &[&str] = &[
    WHOAMI,
    EMAIL_VERIFY_REQUEST,
    EMAIL_CHANGE,
    LOGOUT,
    EVENTS,
    ACCOUNT,
    ACCOUNT_EXPORT,
    SETTINGS_PAGE,
    EMAIL_VERIFY_REQUEST_PAGE,
    EMAIL_CHANGE_PAGE,
    DELETE_ACCOUNT_PAGE,
    LOGOUT_PAGE,
    STYLESHEET,
    SCRIPT,
];

/// What a session that owes a second factor (`Auth::second_factor_due`) may still reach: what
/// adding one takes, and leaving.
pub const ENROLMENT: &[&str] = &[
    WHOAMI,
    PASSKEY_REGISTER_OPTIONS,
    PASSKEY_REGISTER,
    LOGOUT,
    REAUTHENTICATE,
    EVENTS,
    FACTORS,
    FACTOR,
    TOTP_FACTORS,
    TOTP_CONFIRM,
    RECOVERY_CODES,
    LOGOUT_PAGE,
    STEP_UP_PAGE,
    SECURITY_PAGE,
    SECURITY_TOTP_PAGE,
    SECURITY_TOTP_CONFIRM_PAGE,
    SECURITY_CODES_PAGE,
    SECURITY_REMOVE_PAGE,
    STYLESHEET,
    SCRIPT,
];

/// Whether `path` is an instance of the route `template`.
fn matches(template: &str, path: &str) -> bool {
    if !template.contains('{') {
        return template == path;
    }
    let mut t = template.split('/');
    let mut p = path.split('/');
    loop {
        match (t.next(), p.next()) {
            (None, None) => return true,
            (Some(ts), Some(ps)) if ts.starts_with('{') => {
                if ps.is_empty() {
                    return false;
                }
            }
            (Some(ts), Some(ps)) if ts == ps => {}
            _ => return false,
        }
    }
}

/// The route a request path belongs to, as a metrics label; `other` for none. (Every request
/// asks: exact paths are compared first, the few with a `{name}` segment after.)
pub fn route_of(path: &str) -> &'static str {
    if let Some(r) = ROUTES.iter().find(|r| r.path == path) {
        return r.path;
    }
    ROUTES
        .iter()
        .find(|r| r.path.contains('{') && matches(r.path, path))
        .map_or("other", |r| r.path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn openapi_documents_every_api_route_and_method_and_nothing_else() {
        let doc: serde_json::Value =
            serde_json::from_str(crate::http::api::health::OPENAPI).unwrap_or_default();
        let mut documented = BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().into_iter().flatten() {
            for method in ops.as_object().into_iter().flatten().map(|(m, _)| m) {
                if method != "parameters" {
                    documented.insert((path.clone(), method.to_uppercase()));
                }
            }
        }
        let coded: BTreeSet<_> = ROUTES
            .iter()
            .filter(|r| r.api)
            .flat_map(|r| {
                r.methods
                    .iter()
                    .map(|m| (r.path.to_string(), m.to_string()))
            })
            .collect();
        assert_eq!(documented, coded);
    }
}
