//! Checking a passkey's assertion against its stored credential: WebAuthn Level 3 §7.2
//! ("Verifying an Authentication Assertion"), from the client data on, with ring for the
//! signature.
//!
//! Registration, where the involved part is (attestation formats, certificate chains), stays
//! with webauthn-rs. Its assertion check is correct but rebuilds the credential's key in OpenSSL
//! on every login, validating the point twice with a full scalar multiplication each time: about
//! 290 µs where ring verifies the same signature in 55 (a passkey login's time fell by the
//! difference when this replaced it). The steps below are few, in the spec's
//! order, and each has a test; the credential is still the one webauthn-rs stored, so its
//! counter and flags are read and written in its format. The steps before them (which
//! credential, whose, which challenge) are the caller's: see `Passkeys::verify`.

use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::Deserialize;
use url::Url;
use webauthn_rs::prelude::{
    COSEAlgorithm, COSEKeyType, Credential, ECDSACurve, Passkey, PublicKeyCredential,
};

/// Flags of the authenticator data (§6.1).
const USER_PRESENT: u8 = 0x01;
const USER_VERIFIED: u8 = 0x04;
const BACKUP_ELIGIBLE: u8 = 0x08;
const BACKUP_STATE: u8 = 0x10;
const ATTESTED_DATA: u8 = 0x40;
const EXTENSIONS: u8 = 0x80;
/// rpIdHash (32), flags (1), signCount (4).
const AUTH_DATA_MIN: usize = 37;

/// What the relying party expects of every assertion.
#[derive(Debug, Clone)]
pub(crate) struct Expected {
    /// SHA-256 of the RP ID.
    rp_id_hash: [u8; 32],
    /// The origin the pages run at, serialised as browsers put it in client data.
    origin: String,
}

impl Expected {
    pub(crate) fn new(rp_id: &str, origin: &Url) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, rp_id.as_bytes());
        let mut rp_id_hash = [0u8; 32];
        rp_id_hash.copy_from_slice(digest.as_ref());
        Self {
            rp_id_hash,
            origin: origin.origin().ascii_serialization(),
        }
    }

    /// Whether `origin`, from client data, is the expected one: its serialisation, or (as some
    /// clients write it) that as a URL with an empty path.
    fn is_origin(&self, origin: &str) -> bool {
        if origin == self.origin {
            return true;
        }
        Url::parse(origin).is_ok_and(|url| {
            url.path() == "/"
                && url.query().is_none()
                && url.fragment().is_none()
                && url.username().is_empty()
                && url.password().is_none()
                && url.origin().ascii_serialization() == self.origin
        })
    }
}

/// A stored credential made ready for checks: its key parsed once.
#[derive(Debug, Clone)]
pub(crate) struct StoredCredential {
    credential: Credential,
    key: Key,
}

#[derive(Debug, Clone)]
enum Key {
    /// ES256: the uncompressed point.
    P256(Vec<u8>),
    /// RS256: modulus and exponent.
    Rsa { n: Vec<u8>, e: Vec<u8> },
}

/// The client data the browser signed (§5.8.1); members not named here are ignored.
#[derive(Deserialize)]
struct ClientData {
    #[serde(rename = "type")]
    type_: String,
    challenge: String,
    origin: String,
    #[serde(rename = "crossOrigin", default)]
    cross_origin: bool,
}

/// What a good assertion says of its credential now.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Checked {
    /// The signature counter it carried.
    pub(crate) counter: u32,
    /// Backup eligibility (BE) and state (BS).
    pub(crate) backup_eligible: bool,
    pub(crate) backup_state: bool,
}

impl StoredCredential {
    /// The credential of a stored passkey, or why it cannot be checked here (webauthn-rs
    /// registers ES256 and RS256 keys only, the two read below).
    pub(crate) fn new(passkey: &Passkey) -> Result<Self, &'static str> {
        let credential = Credential::from(passkey.clone());
        let key = match (&credential.cred.type_, &credential.cred.key) {
            (COSEAlgorithm::ES256, COSEKeyType::EC_EC2(ec))
                if ec.curve == ECDSACurve::SECP256R1 =>
            {
                let (x, y) = (ec.x.as_ref(), ec.y.as_ref());
                if x.len() != 32 || y.len() != 32 {
                    return Err("a P-256 key of the wrong size");
                }
                Key::P256([&[4u8][..], x, y].concat())
            }
            (COSEAlgorithm::RS256, COSEKeyType::RSA(rsa)) => Key::Rsa {
                n: rsa.n.as_ref().to_vec(),
                e: rsa.e.to_vec(),
            },
            _ => return Err("a key of an algorithm not registered here"),
        };
        Ok(Self { credential, key })
    }

    /// The credential's id.
    pub(crate) fn id(&self) -> &[u8] {
        self.credential.cred_id.as_ref()
    }

    /// Checks `assertion` (its id already matched to this credential) over `challenge`: the
    /// client data's type, challenge and origin, the RP ID's hash, user presence and
    /// verification, the backup flags, the signature, and the signature counter. The reason
    /// for a refusal is for the log only.
    pub(crate) fn check(
        &self,
        assertion: &PublicKeyCredential,
        challenge: &[u8],
        expected: &Expected,
    ) -> Result<Checked, &'static str> {
        let response = &assertion.response;
        let client_data_json: &[u8] = response.client_data_json.as_ref();
        let auth_data: &[u8] = response.authenticator_data.as_ref();
        // The client data, parsed as JSON.
        let client: ClientData =
            serde_json::from_slice(client_data_json).map_err(|_| "client data that is not JSON")?;
        // Its type.
        if client.type_ != "webauthn.get" {
            return Err("client data of another ceremony");
        }
        // Its challenge, the one this ceremony gave (base64url without padding, strict).
        let signed = base64_url(&client.challenge).ok_or("a challenge not in base64url")?;
        if !crate::secret::secrets_equal(&signed, challenge) {
            return Err("another challenge");
        }
        // Its origin, and not from inside another site's frame.
        if !expected.is_origin(&client.origin) {
            return Err("another origin");
        }
        if client.cross_origin {
            return Err("a ceremony inside another site's frame");
        }
        // The authenticator data: the RP ID's hash.
        if auth_data.len() < AUTH_DATA_MIN {
            return Err("authenticator data too short");
        }
        if auth_data[..32] != expected.rp_id_hash {
            return Err("another RP ID");
        }
        let flags = auth_data[32];
        // An assertion carries no attested credential data; without extensions the data ends
        // with the counter (extensions are signed and ignored: none are asked for).
        if flags & ATTESTED_DATA != 0
            || (flags & EXTENSIONS == 0 && auth_data.len() != AUTH_DATA_MIN)
        {
            return Err("authenticator data of the wrong shape");
        }
        // User presence, and verification (every passkey here is registered with it).
        if flags & USER_PRESENT == 0 {
            return Err("no user presence");
        }
        if flags & USER_VERIFIED == 0 {
            return Err("no user verification");
        }
        // Backup eligibility is fixed at registration (it may only be discovered later,
        // never lost), and a credential cannot be backed up without it.
        let backup_eligible = flags & BACKUP_ELIGIBLE != 0;
        let backup_state = flags & BACKUP_STATE != 0;
        if self.credential.backup_eligible && !backup_eligible {
            return Err("a synced credential that says it is bound to its device");
        }
        if backup_state && !backup_eligible {
            return Err("backed up without being eligible");
        }
        // The signature over the authenticator data and the client data's hash.
        let hash = ring::digest::digest(&ring::digest::SHA256, client_data_json);
        let signed_data = [auth_data, hash.as_ref()].concat();
        let signature: &[u8] = response.signature.as_ref();
        let verified = match &self.key {
            Key::P256(point) => UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, point)
                .verify(&signed_data, signature),
            Key::Rsa { n, e } => RsaPublicKeyComponents { n, e }.verify(
                &signature::RSA_PKCS1_2048_8192_SHA256,
                &signed_data,
                signature,
            ),
        };
        verified.map_err(|_| "a bad signature")?;
        // The signature counter: when either is not zero, it must have grown (else two
        // copies of the key are in use).
        let counter =
            u32::from_be_bytes([auth_data[33], auth_data[34], auth_data[35], auth_data[36]]);
        let stored = self.credential.counter;
        if (counter != 0 || stored != 0) && counter <= stored {
            return Err("a signature counter that went back");
        }
        Ok(Checked {
            counter,
            backup_eligible,
            backup_state,
        })
    }

    /// The passkey as it is after `checked`: its counter and backup flags updated.
    pub(crate) fn after(&self, checked: &Checked) -> Passkey {
        let mut credential = self.credential.clone();
        credential.counter = checked.counter;
        credential.backup_eligible = checked.backup_eligible;
        credential.backup_state = checked.backup_state;
        Passkey::from(credential)
    }
}

/// Strict unpadded base64url.
fn base64_url(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
    use serde_json::{json, Value};
    use webauthn_rs::prelude::{AttestationFormat, COSEEC2Key, COSEKey, ParsedAttestation};

    const ORIGIN: &str = "https://login.example.com";
    const RP_ID: &str = "example.com";
    const CHALLENGE: &[u8] = b"the challenge given";

    fn b64(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A P-256 authenticator and the credential the server stored for it.
    struct Device {
        key: EcdsaKeyPair,
        rng: SystemRandom,
    }

    impl Device {
        fn new() -> Self {
            let rng = SystemRandom::new();
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
            let key =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
                    .unwrap();
            Self { key, rng }
        }

        fn stored(&self, counter: u32, backup_eligible: bool) -> StoredCredential {
            let point = self.key.public_key().as_ref();
            let credential = Credential {
                cred_id: vec![1, 2, 3].into(),
                cred: COSEKey {
                    type_: COSEAlgorithm::ES256,
                    key: COSEKeyType::EC_EC2(COSEEC2Key {
                        curve: ECDSACurve::SECP256R1,
                        x: point[1..33].to_vec().into(),
                        y: point[33..].to_vec().into(),
                    }),
                },
                counter,
                transports: None,
                user_verified: true,
                backup_eligible,
                backup_state: false,
                registration_policy: Default::default(),
                extensions: Default::default(),
                attestation: ParsedAttestation::default(),
                attestation_format: AttestationFormat::None,
            };
            StoredCredential::new(&Passkey::from(credential)).unwrap()
        }

        /// An assertion over `client` data with authenticator data `rp_id`'s hash, `flags`,
        /// `counter` and `extra` bytes after it.
        fn assert(
            &self,
            client: Value,
            rp_id: &str,
            flags: u8,
            counter: u32,
            extra: &[u8],
        ) -> PublicKeyCredential {
            let client = serde_json::to_vec(&client).unwrap();
            let rp_id_hash = ring::digest::digest(&ring::digest::SHA256, rp_id.as_bytes());
            let auth_data = [rp_id_hash.as_ref(), &[flags], &counter.to_be_bytes(), extra].concat();
            let hash = ring::digest::digest(&ring::digest::SHA256, &client);
            let signature = self
                .key
                .sign(&self.rng, &[&auth_data[..], hash.as_ref()].concat())
                .unwrap();
            serde_json::from_value(json!({
                "id": b64(&[1, 2, 3]),
                "rawId": b64(&[1, 2, 3]),
                "type": "public-key",
                "response": {
                    "authenticatorData": b64(&auth_data),
                    "clientDataJSON": b64(&client),
                    "signature": b64(signature.as_ref()),
                    "userHandle": null,
                },
            }))
            .unwrap()
        }
    }

    fn client() -> Value {
        json!({"type": "webauthn.get", "challenge": b64(CHALLENGE), "origin": ORIGIN, "crossOrigin": false})
    }

    fn with_origin(origin: &str) -> Value {
        let mut c = client();
        c["origin"] = json!(origin);
        c
    }

    const GOOD: u8 = USER_PRESENT | USER_VERIFIED;

    fn expected() -> Expected {
        Expected::new(RP_ID, &Url::parse(ORIGIN).unwrap())
    }

    #[test]
    fn a_good_assertion_passes_and_moves_the_counter() {
        let device = Device::new();
        let stored = device.stored(4, true);
        let synced = GOOD | BACKUP_ELIGIBLE | BACKUP_STATE;
        let checked = stored
            .check(
                &device.assert(client(), RP_ID, synced, 5, &[]),
                CHALLENGE,
                &expected(),
            )
            .unwrap();
        assert_eq!(checked.counter, 5);
        assert!(checked.backup_eligible && checked.backup_state);
        let after = StoredCredential::new(&stored.after(&checked)).unwrap();
        assert_eq!(after.credential.counter, 5);
        assert!(after.credential.backup_state);
        // A credential whose counter stays at zero (most synced passkeys) passes each time.
        let zero = device.stored(0, false);
        for _ in 0..2 {
            zero.check(
                &device.assert(client(), RP_ID, GOOD, 0, &[]),
                CHALLENGE,
                &expected(),
            )
            .unwrap();
        }
        // Extensions are signed and ignored.
        let with_extensions = device.assert(client(), RP_ID, GOOD | EXTENSIONS, 0, &[0xa0]);
        zero.check(&with_extensions, CHALLENGE, &expected())
            .unwrap();
        // The origin as a URL with an empty path (as some clients write it) is the origin.
        let slash = with_origin("https://login.example.com/");
        zero.check(
            &device.assert(slash, RP_ID, GOOD, 0, &[]),
            CHALLENGE,
            &expected(),
        )
        .unwrap();
        // The origin's serialisation is the configured one's, whatever the configured URL's path.
        let configured = Expected::new(RP_ID, &Url::parse("https://login.example.com/").unwrap());
        zero.check(
            &device.assert(client(), RP_ID, GOOD, 0, &[]),
            CHALLENGE,
            &configured,
        )
        .unwrap();
    }

    #[test]
    fn each_step_refuses_what_it_must() {
        let device = Device::new();
        let stored = device.stored(7, false);
        let with = |change: &dyn Fn(&mut Value)| {
            let mut c = client();
            change(&mut c);
            c
        };
        let cases: Vec<(PublicKeyCredential, &str)> = vec![
            (
                device.assert(
                    with(&|c| c["type"] = json!("webauthn.create")),
                    RP_ID,
                    GOOD,
                    8,
                    &[],
                ),
                "client data of another ceremony",
            ),
            (
                device.assert(
                    with(&|c| c["challenge"] = json!(b64(b"another challenge"))),
                    RP_ID,
                    GOOD,
                    8,
                    &[],
                ),
                "another challenge",
            ),
            (
                device.assert(
                    with(&|c| c["challenge"] = json!(format!("{}=", b64(CHALLENGE)))),
                    RP_ID,
                    GOOD,
                    8,
                    &[],
                ),
                "a challenge not in base64url",
            ),
            (
                device.assert(
                    with(&|c| c["origin"] = json!("https://login.example.com.evil")),
                    RP_ID,
                    GOOD,
                    8,
                    &[],
                ),
                "another origin",
            ),
            (
                device.assert(
                    with(&|c| c["origin"] = json!("http://login.example.com")),
                    RP_ID,
                    GOOD,
                    8,
                    &[],
                ),
                "another origin",
            ),
            (
                device.assert(
                    with(&|c| c["origin"] = json!("https://login.example.com/x")),
                    RP_ID,
                    GOOD,
                    8,
                    &[],
                ),
                "another origin",
            ),
            (
                device.assert(
                    with(&|c| c["origin"] = json!("https://a@login.example.com")),
                    RP_ID,
                    GOOD,
                    8,
                    &[],
                ),
                "another origin",
            ),
            (
                device.assert(
                    with(&|c| c["crossOrigin"] = json!(true)),
                    RP_ID,
                    GOOD,
                    8,
                    &[],
                ),
                "a ceremony inside another site's frame",
            ),
            (
                device.assert(client(), "evil.example", GOOD, 8, &[]),
                "another RP ID",
            ),
            (
                device.assert(client(), RP_ID, USER_VERIFIED, 8, &[]),
                "no user presence",
            ),
            (
                device.assert(client(), RP_ID, USER_PRESENT, 8, &[]),
                "no user verification",
            ),
            (
                device.assert(client(), RP_ID, GOOD | BACKUP_STATE, 8, &[]),
                "backed up without being eligible",
            ),
            (
                device.assert(client(), RP_ID, GOOD | ATTESTED_DATA, 8, &[]),
                "authenticator data of the wrong shape",
            ),
            (
                device.assert(client(), RP_ID, GOOD, 8, &[0]),
                "authenticator data of the wrong shape",
            ),
            (
                device.assert(client(), RP_ID, GOOD, 7, &[]),
                "a signature counter that went back",
            ),
            (
                device.assert(client(), RP_ID, GOOD, 0, &[]),
                "a signature counter that went back",
            ),
        ];
        for (assertion, why) in cases {
            assert_eq!(
                stored
                    .check(&assertion, CHALLENGE, &expected())
                    .unwrap_err(),
                why
            );
        }
        // Not JSON; too short.
        let mut garbled = device.assert(client(), RP_ID, GOOD, 8, &[]);
        garbled.response.client_data_json = b"{".to_vec().into();
        assert_eq!(
            stored.check(&garbled, CHALLENGE, &expected()).unwrap_err(),
            "client data that is not JSON"
        );
        let mut short = device.assert(client(), RP_ID, GOOD, 8, &[]);
        short.response.authenticator_data = vec![0u8; 36].into();
        assert_eq!(
            stored.check(&short, CHALLENGE, &expected()).unwrap_err(),
            "authenticator data too short"
        );
        // Anything changed after signing: the counter, the client data, another key's signature.
        let mut tampered = device.assert(client(), RP_ID, GOOD, 8, &[]);
        let mut data: Vec<u8> = tampered.response.authenticator_data.clone().into();
        data[36] = 9;
        tampered.response.authenticator_data = data.into();
        assert_eq!(
            stored.check(&tampered, CHALLENGE, &expected()).unwrap_err(),
            "a bad signature"
        );
        let other = Device::new();
        let forged = other.assert(client(), RP_ID, GOOD, 8, &[]);
        assert_eq!(
            stored.check(&forged, CHALLENGE, &expected()).unwrap_err(),
            "a bad signature"
        );
        // A synced credential cannot turn device-bound; a device-bound one may learn it is
        // eligible (it is then a synced one).
        let synced = device.stored(0, true);
        let bound = device.assert(client(), RP_ID, GOOD, 0, &[]);
        assert_eq!(
            synced.check(&bound, CHALLENGE, &expected()).unwrap_err(),
            "a synced credential that says it is bound to its device"
        );
        let learns = device.assert(client(), RP_ID, GOOD | BACKUP_ELIGIBLE, 8, &[]);
        assert!(
            stored
                .check(&learns, CHALLENGE, &expected())
                .unwrap()
                .backup_eligible
        );
    }
}
