//! The request bodies as the code reads them, held to `openapi.json`: the same properties, and
//! the same required ones, for every body the API takes.

use schemars::{schema_for, JsonSchema};
use serde_json::Value;
use std::collections::BTreeSet;

use super::account::{EmailChangeBody, ForgotBody, ResetBody, TokenBody};
use super::auth::{
    LoginBody, LoginMfaBody, PasswordBody, ReauthBody, ReauthenticateBody, SignupBody,
};
use super::factors::{ConfirmBody, TotpBody};
use super::health::OPENAPI;
use super::passkeys::{LoginBody as PasskeyLoginBody, LoginOptionsBody, RegisterBody};
use super::token::TokenRequest;

fn names(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

fn required(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The document's schema `name`, with every `oneOf` variant's properties merged when the variants
/// are schemas of their own (a body with variants is one struct in the code).
fn documented(name: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let doc: Value = serde_json::from_str(OPENAPI).unwrap_or_default();
    let schemas = &doc["components"]["schemas"];
    let schema = &schemas[name];
    let variants = schema["oneOf"]
        .as_array()
        .filter(|v| v.iter().all(|x| x.get("$ref").is_some()));
    match variants {
        Some(variants) => {
            let mut props = BTreeSet::new();
            let mut always: Option<BTreeSet<String>> = None;
            for v in variants {
                let r = v["$ref"].as_str().unwrap_or_default();
                let variant = &schemas[r.rsplit('/').next().unwrap_or_default()];
                props.extend(names(&variant["properties"]));
                let req = required(&variant["required"]);
                always = Some(match always {
                    None => req,
                    Some(a) => a.intersection(&req).cloned().collect(),
                });
            }
            (props, always.unwrap_or_default())
        }
        None => (names(&schema["properties"]), required(&schema["required"])),
    }
}

fn coded<T: JsonSchema>() -> (BTreeSet<String>, BTreeSet<String>) {
    let schema = schema_for!(T);
    let v = schema.as_value();
    (names(&v["properties"]), required(&v["required"]))
}

#[test]
fn every_request_body_is_documented_as_the_code_reads_it() {
    let cases = [
        ("Credentials", coded::<SignupBody>()),
        ("Login", coded::<LoginBody>()),
        ("LoginMfa", coded::<LoginMfaBody>()),
        ("TotpEnrol", coded::<TotpBody>()),
        ("TotpConfirm", coded::<ConfirmBody>()),
        ("Reauthenticate", coded::<ReauthenticateBody>()),
        ("PasskeyRegister", coded::<RegisterBody>()),
        ("PasskeyLoginOptions", coded::<LoginOptionsBody>()),
        ("PasskeyLogin", coded::<PasskeyLoginBody>()),
        ("Reauth", coded::<ReauthBody>()),
        ("PasswordChange", coded::<PasswordBody>()),
        ("TokenRequest", coded::<TokenRequest>()),
        ("LinkToken", coded::<TokenBody>()),
        ("EmailChange", coded::<EmailChangeBody>()),
        ("PasswordForgot", coded::<ForgotBody>()),
        ("PasswordReset", coded::<ResetBody>()),
    ];
    for (name, (props, req)) in cases {
        let (doc_props, doc_req) = documented(name);
        assert_eq!(doc_props, props, "{name}: properties");
        assert!(
            req.is_subset(&doc_req),
            "{name}: the code requires {req:?}, the document {doc_req:?}"
        );
        if name != "TokenRequest" {
            assert_eq!(doc_req, req, "{name}: required");
        }
    }
}
