// Passkeys on cloakroom's pages. The only script of the pages, served from this site (the pages'
// policy allows no other, and no inline script); without it, everything but passkeys works.
// Buttons marked `data-passkey` start hidden and are shown here when the browser can use them.
(function () {
  "use strict";

  var pkc = window.PublicKeyCredential;
  if (!pkc || !pkc.parseRequestOptionsFromJSON || !pkc.parseCreationOptionsFromJSON) {
    return;
  }

  function field(name) {
    var el = document.querySelector('input[name="' + name + '"]');
    return el ? el.value : "";
  }

  // Where a completed login goes: an allowed return URL or path the page was given, else home.
  function destination() {
    return field("rd") || field("next") || "/dashboard";
  }

  function say(message) {
    var el = document.getElementById("passkey-error");
    if (el) {
      el.textContent = message;
      el.hidden = false;
    }
  }

  async function post(path, body) {
    var res = await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    var data = null;
    try {
      data = await res.json();
    } catch (e) {
      data = null;
    }
    return { ok: res.ok, data: data };
  }

  // The server's words, in a sentence, or `fallback` when it gave none.
  function failed(out, fallback) {
    var error = out && out.data && out.data.error;
    if (error && error.message) {
      say(error.message.charAt(0).toUpperCase() + error.message.slice(1) + ".");
    } else {
      say(fallback);
    }
  }

  var pending = null;

  async function assertion(body, conditional) {
    var options = await post("/auth/passkeys/login/options", body);
    if (!options.ok) {
      failed(options, "Passkeys cannot be used right now.");
      return null;
    }
    if (pending) {
      pending.abort();
    }
    pending = new AbortController();
    var request = {
      publicKey: pkc.parseRequestOptionsFromJSON(options.data.publicKey),
      signal: pending.signal,
    };
    if (conditional) {
      request.mediation = "conditional";
    }
    var credential = await navigator.credentials.get(request);
    pending = null;
    return credential.toJSON();
  }

  // Passwordless login, from the button or from the email field's autofill.
  async function login(conditional) {
    var remember = document.getElementById("remember");
    var credential = await assertion({ conditional: conditional }, conditional);
    if (!credential) {
      return;
    }
    var out = await post("/auth/passkeys/login", {
      credential: credential,
      remember: !!(remember && remember.checked),
    });
    if (out.ok) {
      window.location.assign(destination());
    } else {
      failed(out, "That passkey was not accepted.");
    }
  }

  // The second step of a password login.
  async function secondStep() {
    var token = field("mfa_token");
    var credential = await assertion({ mfa_token: token }, false);
    if (!credential) {
      return;
    }
    var out = await post("/auth/login/mfa", { mfa_token: token, credential: credential });
    if (out.ok) {
      window.location.assign(destination());
    } else {
      failed(out, "That passkey was not accepted.");
    }
  }

  // Adding a passkey on the security page.
  async function register() {
    var password = document.getElementById("passkey-password");
    var body = password && password.value ? { current_password: password.value } : {};
    var options = await post("/auth/passkeys/register/options", body);
    if (!options.ok) {
      failed(options, "A passkey cannot be added right now.");
      return;
    }
    var credential = await navigator.credentials.create({
      publicKey: pkc.parseCreationOptionsFromJSON(options.data.publicKey),
    });
    var name = document.getElementById("passkey-name");
    var request = { credential: credential.toJSON() };
    if (name && name.value.trim()) {
      request.name = name.value.trim();
    }
    var out = await post("/auth/passkeys/register", request);
    if (out.ok) {
      window.location.assign("/settings/security?done=passkey_added");
    } else {
      failed(out, "That passkey was not added.");
    }
  }

  function on(id, action) {
    var button = document.getElementById(id);
    if (!button) {
      return;
    }
    button.hidden = false;
    var box = button.closest("[hidden]");
    if (box) {
      box.hidden = false;
    }
    button.addEventListener("click", function () {
      action().catch(function (e) {
        if (e && e.name !== "AbortError") {
          say("The passkey prompt was closed or failed. Try again.");
        }
      });
    });
  }

  on("passkey-login", function () {
    return login(false);
  });
  on("passkey-mfa", secondStep);
  on("add-passkey", register);

  // Autofill: offer the user's passkeys in the email field's suggestions.
  if (document.getElementById("passkey-login") && pkc.isConditionalMediationAvailable) {
    pkc.isConditionalMediationAvailable().then(function (available) {
      if (available) {
        login(true).catch(function () {});
      }
    });
  }
})();
