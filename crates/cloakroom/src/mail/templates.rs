//! The mail templates: subject, plain text and HTML for each kind of message, built in, each
//! replaceable by a file of the same name in a deployment's directory (`--mail-templates`).
//! They are minijinja templates; the HTML ones escape what they insert.

use minijinja::Environment;
use std::path::Path;

/// The kinds of message, each with its three templates (`NAME.subject`, `NAME.txt`,
/// `NAME.html`).
pub const KINDS: [&str; 6] = [
    "verify_email",
    "reset_password",
    "password_changed",
    "change_email",
    "email_change_requested",
    "security_notice",
];

const BUILT_IN: [(&str, &str); 18] = [
    (
        "verify_email.subject",
        include_str!("templates/verify_email.subject"),
    ),
    (
        "verify_email.txt",
        include_str!("templates/verify_email.txt"),
    ),
    (
        "verify_email.html",
        include_str!("templates/verify_email.html"),
    ),
    (
        "reset_password.subject",
        include_str!("templates/reset_password.subject"),
    ),
    (
        "reset_password.txt",
        include_str!("templates/reset_password.txt"),
    ),
    (
        "reset_password.html",
        include_str!("templates/reset_password.html"),
    ),
    (
        "password_changed.subject",
        include_str!("templates/password_changed.subject"),
    ),
    (
        "password_changed.txt",
        include_str!("templates/password_changed.txt"),
    ),
    (
        "password_changed.html",
        include_str!("templates/password_changed.html"),
    ),
    (
        "change_email.subject",
        include_str!("templates/change_email.subject"),
    ),
    (
        "change_email.txt",
        include_str!("templates/change_email.txt"),
    ),
    (
        "change_email.html",
        include_str!("templates/change_email.html"),
    ),
    (
        "email_change_requested.subject",
        include_str!("templates/email_change_requested.subject"),
    ),
    (
        "email_change_requested.txt",
        include_str!("templates/email_change_requested.txt"),
    ),
    (
        "email_change_requested.html",
        include_str!("templates/email_change_requested.html"),
    ),
    (
        "security_notice.subject",
        include_str!("templates/security_notice.subject"),
    ),
    (
        "security_notice.txt",
        include_str!("templates/security_notice.txt"),
    ),
    (
        "security_notice.html",
        include_str!("templates/security_notice.html"),
    ),
];

/// A template that could not be read, parsed or rendered.
#[derive(Debug)]
pub struct TemplateError(pub String);

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TemplateError {}

/// A message rendered from its templates.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// One line.
    pub subject: String,
    /// Plain text.
    pub text: String,
    /// HTML.
    pub html: String,
}

/// The set of templates in use.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// The built-in templates, with those found in `dir` (if given) in their place. Every
    /// template is parsed here, so that a broken one stops the start, not a later request.
    pub fn load(dir: Option<&Path>) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                minijinja::AutoEscape::Html
            } else {
                minijinja::AutoEscape::None
            }
        });
        for (name, built_in) in BUILT_IN {
            let source = match dir.map(|d| d.join(name)) {
                Some(path) if path.exists() => std::fs::read_to_string(&path)
                    .map_err(|e| TemplateError(format!("{}: {e}", path.display())))?,
                _ => built_in.to_string(),
            };
            env.add_template_owned(name.to_string(), source)
                .map_err(|e| TemplateError(format!("mail template {name}: {e}")))?;
        }
        Ok(Self { env })
    }

    /// Renders the message `kind` (one of [`KINDS`]) with `context`.
    pub fn render(
        &self,
        kind: &str,
        context: &serde_json::Value,
    ) -> Result<Rendered, TemplateError> {
        let part = |ext: &str| {
            let name = format!("{kind}.{ext}");
            self.env
                .get_template(&name)
                .and_then(|t| t.render(context))
                .map_err(|e| TemplateError(format!("mail template {name}: {e}")))
        };
        Ok(Rendered {
            subject: part("subject")?
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string(),
            text: part("txt")?,
            html: part("html")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn built_in_templates_render_and_html_is_escaped() {
        let t = Templates::load(None).unwrap();
        for kind in KINDS {
            let out = t
                .render(
                    kind,
                    &json!({
                        "link": "https://auth.example.test/x?token=a&b=<c>",
                        "email": "a@example.test",
                        "what": "A second factor was added",
                        "device": "<script>",
                    }),
                )
                .unwrap();
            assert!(
                !out.subject.is_empty() && !out.subject.contains('\n'),
                "{kind}"
            );
            assert!(!out.html.contains("<c>"), "{kind}: {}", out.html);
            assert!(!out.html.contains("<script>"), "{kind}: {}", out.html);
        }
        let out = t
            .render(
                "verify_email",
                &json!({"link": "https://a.test/v?token=t", "email": "a@example.test"}),
            )
            .unwrap();
        assert!(out.text.contains("https://a.test/v?token=t"));
    }

    #[test]
    fn a_directory_replaces_some_templates_and_a_broken_one_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("verify_email.subject"), "Hello {{ email }}").unwrap();
        let t = Templates::load(Some(dir.path())).unwrap();
        let out = t
            .render(
                "verify_email",
                &serde_json::json!({"link": "l", "email": "me@example.test"}),
            )
            .unwrap();
        assert_eq!(out.subject, "Hello me@example.test");
        std::fs::write(dir.path().join("reset_password.txt"), "{% if %}").unwrap();
        assert!(Templates::load(Some(dir.path())).is_err());
    }
}
