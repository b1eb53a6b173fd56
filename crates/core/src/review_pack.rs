//! Review packs (`review_pack.generate`): the pure rules. What a pack holds
//! (the file map, planned from the options before `total` is set), how its
//! entries are named (safe, unique paths), what is redacted, how its CSV
//! cells are written, its manifest, its index, and how a stale generation
//! is reconciled from its own ZIP.
//!
//! **File map** ([`plan`]), in this order; `total` is its length, the
//! manifest excluded:
//! 1. `index.md`, `index.html` — the tenant's summary: inventory per type,
//!    latest complete backup, latest compare and its findings count, latest
//!    evidence snapshot;
//! 2. per policy type: `inventory/<type>.csv` and `inventory/<type>.json`
//!    (one row per policy: id, name, `@odata.type`, last modified,
//!    assignment count);
//! 3. with `include_policies`: one `policies/<type>/<name>.json` per policy
//!    (its settings; its assignments too with `include_assignments`);
//! 4. with `include_assignments`: `assignments.csv` (one row per target);
//! 5. with `include_findings`, when the tenant has a compare:
//!    `findings.csv` and `findings.json` (the latest compare's findings);
//! 6. `manifest.json` last, not counted: every file above with its size and
//!    SHA-256 ([`Manifest`]).
//!
//! **Redaction** ([`redact`], on by default) replaces a secret-bearing value
//! with [`REDACTED`], keeping its key so a reviewer sees a secret is set:
//! - a string (or list, or object) under a key whose last word is a secret:
//!   `password`, `passphrase`, `passcode`, `secret` (`clientSecret`),
//!   `secretKey` (`sharedSecretKey`), `preSharedKey`, `sharedKey`, `psk`,
//!   `wpaKey`, `wepKey`, `networkKey`, `keyMaterial`, `privateKey`,
//!   `apiKey`, `token`, `productKey`, `recoveryKey`, `exitCode`
//!   (`kioskModeExitCode`), `secretReferenceValueId`, `pfx`, `pkcs12`,
//!   `certificate` (`trustedRootCertificate`…), `certificateBlob`,
//!   `certBlob` (see [`is_secret_key`]); a string under a key whose last
//!   word is `Pin`/`PIN` (`kioskModePin`); booleans and numbers are never
//!   secrets (`passwordRequired`, `passwordMinimumLength`, `pinned` stay);
//! - any string holding a certificate or key: a PEM block (`-----BEGIN`),
//!   DER in base64 (`MII…`, 64+ characters), or Wi-Fi profile XML with a
//!   `<keyMaterial>`; and any base64 string of 64+ characters whose decoded
//!   text holds one of those or names a secret (password, pre-shared key,
//!   credential, certificate…) ([`looks_secret`]);
//! - by an object's `@odata.type`: the `value` of a settings catalog
//!   `…SecretSettingValue`; the `payload` of an `…ImportConfiguration` or
//!   `…CustomConfiguration` (base64 Wi-Fi XML, mobileconfig);
//! - in a key/value list (`customData`, `customKeyValueData`, app
//!   configuration settings), the value of an entry whose `key`, `name` or
//!   `appConfigKey` is a secret word (`{"key": "password", "value": …}`);
//! - OMA-URI settings: every `omaSettingBase64` value (binary payloads:
//!   certificates, profiles); an `omaSettingString` or `omaSettingStringXml`
//!   value whose `omaUri` names a secret (password, pre-shared key, key
//!   material, credential, certificate, Wi-Fi, VPN…) or whose content
//!   (decoded, when base64) holds one; any setting marked `isEncrypted`;
//! - in findings, both sides of a change whose path names a secret member,
//!   a settings catalog setting whose definition id ends in a secret word,
//!   or an OMA-URI setting that names one ([`redact_change`]).
//!
//! **CSV** ([`csv_record`]): every cell quoted (a header of bare words
//! excepted), so no delimiter of any locale splits one; a cell that could
//! run as a formula (`=`, `+`, `-`, `@` after optional whitespace; a tab or
//! CR first) is prefixed with `'`.
//!
//! **Paths** ([`safe_segment`]): letters, digits, `-`, `_`, `.`, single
//! spaces; no `..`, no leading `/` or dot, no Windows device names
//! (`CON`, `COM1`, `COM¹`, `LPT³`…); a name at most [`MAX_SEGMENT_CHARS`]
//! characters and every segment, extension and id included, at most
//! [`MAX_SEGMENT_BYTES`] bytes (a long name is cut on a character boundary,
//! never its id); unique without regard to letter case, folded as
//! `to_uppercase().to_lowercase()` (a second policy of one name gets its id
//! appended).

use crate::drift::{Change, Finding};
use crate::reconcile::{AdapterResult, Verdict};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;

/// The name of a pack's file among its run's files.
pub const PACK_FILE_NAME: &str = "review-pack.zip";
/// The manifest's path inside the ZIP (written last, not counted).
pub const MANIFEST_PATH: &str = "manifest.json";
/// The manifest's format tag.
pub const MANIFEST_FORMAT: &str = "opsledger.review_pack.v1";
/// Most files one pack may hold (a tenant past it is refused before writing).
pub const MAX_PACK_FILES: usize = 200_000;
/// Longest path segment made from a display name, in characters.
pub const MAX_SEGMENT_CHARS: usize = 80;
/// Longest path segment of a pack, in bytes of UTF-8 (file systems limit
/// bytes, not characters: 255 on most, fewer under encrypting layers),
/// its extension and disambiguating id included.
pub const MAX_SEGMENT_BYTES: usize = 150;
/// Longest id kept in a disambiguated policy file name, in bytes.
const MAX_ID_BYTES: usize = 64;
/// What a redacted value is replaced with.
pub const REDACTED: &str = "[redacted]";

/// The options of a generation (its validated start parameters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackOptions {
    /// The policy types covered; `None`: every type of the tenant's inventory.
    pub types: Option<Vec<String>>,
    pub include_policies: bool,
    pub include_assignments: bool,
    pub include_findings: bool,
    pub redact: bool,
}

impl Default for PackOptions {
    fn default() -> PackOptions {
        PackOptions {
            types: None,
            include_policies: true,
            include_assignments: true,
            include_findings: true,
            redact: true,
        }
    }
}

impl PackOptions {
    /// The options of validated `params` (absent flags are on).
    pub fn from_params(params: &Value) -> PackOptions {
        let flag = |name: &str| params.get(name).and_then(Value::as_bool).unwrap_or(true);
        PackOptions {
            types: params
                .get("types")
                .and_then(Value::as_array)
                .map(|list| list.iter().filter_map(Value::as_str).map(str::to_owned).collect()),
            include_policies: flag("include_policies"),
            include_assignments: flag("include_assignments"),
            include_findings: flag("include_findings"),
            redact: flag("redact"),
        }
    }

    /// The types the pack covers: the named ones, else every inventoried type.
    pub fn selected_types(&self, inventoried: &[String]) -> Vec<String> {
        let mut types = self.types.clone().unwrap_or_else(|| inventoried.to_vec());
        types.sort();
        types.dedup();
        types
    }
}

/// A policy of the tenant's inventory, as the plan needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyHead {
    pub policy_type: String,
    pub external_id: String,
    pub display_name: String,
}

/// What one entry of the ZIP holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    IndexMarkdown,
    IndexHtml,
    InventoryCsv(String),
    InventoryJson(String),
    Policy {
        policy_type: String,
        external_id: String,
    },
    AssignmentsCsv,
    FindingsCsv,
    FindingsJson,
}

/// One planned entry: its path in the ZIP (its unit key) and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub kind: EntryKind,
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("the review pack would hold {planned} files; the limit is {limit}")]
    TooManyFiles { planned: usize, limit: usize },
}

/// The file map: every entry of the pack in writing order, the manifest
/// excluded. `types` are the selected types ([`PackOptions::selected_types`]);
/// `policies` the inventory's policies in a stable order (only those of the
/// selected types are planned); `has_compare`: the tenant has a compare
/// whose findings the pack can hold.
pub fn plan(
    options: &PackOptions,
    types: &[String],
    policies: &[PolicyHead],
    has_compare: bool,
) -> Result<Vec<Entry>, PlanError> {
    let mut paths = UniquePaths::default();
    let mut out = vec![
        Entry {
            path: paths.claim("index.md".into()),
            kind: EntryKind::IndexMarkdown,
        },
        Entry {
            path: paths.claim("index.html".into()),
            kind: EntryKind::IndexHtml,
        },
    ];
    for t in types {
        let seg = safe_segment(t);
        out.push(Entry {
            path: paths.claim(format!("inventory/{}", fit_segment(&seg, ".csv"))),
            kind: EntryKind::InventoryCsv(t.clone()),
        });
        out.push(Entry {
            path: paths.claim(format!("inventory/{}", fit_segment(&seg, ".json"))),
            kind: EntryKind::InventoryJson(t.clone()),
        });
    }
    if options.include_policies {
        let selected: BTreeSet<&str> = types.iter().map(String::as_str).collect();
        for p in policies
            .iter()
            .filter(|p| selected.contains(p.policy_type.as_str()))
        {
            let dir = format!("policies/{}", safe_segment(&p.policy_type));
            let name = safe_segment(&p.display_name);
            // `<name>.json`, else `<name> (<id>).json`, else `<name> (<id>) 2.json`…;
            // the name is cut to fit, never the id or the counter.
            let mut path = format!("{dir}/{}", fit_segment(&name, ".json"));
            let id = id_segment(&p.external_id);
            let mut n = 1;
            while paths.taken(&path) {
                let counter = if n == 1 { String::new() } else { format!(" {n}") };
                path = format!("{dir}/{}", fit_segment(&name, &format!(" ({id}){counter}.json")));
                n += 1;
            }
            out.push(Entry {
                path: paths.claim(path),
                kind: EntryKind::Policy {
                    policy_type: p.policy_type.clone(),
                    external_id: p.external_id.clone(),
                },
            });
        }
    }
    if options.include_assignments {
        out.push(Entry {
            path: paths.claim("assignments.csv".into()),
            kind: EntryKind::AssignmentsCsv,
        });
    }
    if options.include_findings && has_compare {
        out.push(Entry {
            path: paths.claim("findings.csv".into()),
            kind: EntryKind::FindingsCsv,
        });
        out.push(Entry {
            path: paths.claim("findings.json".into()),
            kind: EntryKind::FindingsJson,
        });
    }
    if out.len() > MAX_PACK_FILES {
        return Err(PlanError::TooManyFiles {
            planned: out.len(),
            limit: MAX_PACK_FILES,
        });
    }
    Ok(out)
}

/// A path as compared for uniqueness: case-folded beyond `to_lowercase`
/// (`ß` and `SS`, `ſ` and `s` are one), as case-insensitive file systems
/// may fold.
fn fold_case(path: &str) -> String {
    path.to_uppercase().to_lowercase()
}

/// Paths used so far, compared without letter case ([`fold_case`]: a ZIP
/// unpacked on a case-insensitive file system must not lose a file).
#[derive(Default)]
struct UniquePaths(BTreeSet<String>);

impl UniquePaths {
    fn taken(&self, path: &str) -> bool {
        let folded = fold_case(path);
        self.0.contains(&folded) || folded == MANIFEST_PATH
    }
    fn claim(&mut self, path: String) -> String {
        debug_assert!(is_safe_path(&path), "{path:?}");
        debug_assert!(
            path.split('/').all(|seg| seg.len() <= MAX_SEGMENT_BYTES),
            "{path:?}"
        );
        self.0.insert(fold_case(&path));
        path
    }
}

/// Windows device names: a file of that base name cannot be created there
/// (the superscript digits are reserved too).
const DEVICE_NAMES: &[&str] = &[
    "con",
    "prn",
    "aux",
    "nul",
    "com0",
    "com1",
    "com2",
    "com3",
    "com4",
    "com5",
    "com6",
    "com7",
    "com8",
    "com9",
    "com\u{b9}",
    "com\u{b2}",
    "com\u{b3}",
    "lpt0",
    "lpt1",
    "lpt2",
    "lpt3",
    "lpt4",
    "lpt5",
    "lpt6",
    "lpt7",
    "lpt8",
    "lpt9",
    "lpt\u{b9}",
    "lpt\u{b2}",
    "lpt\u{b3}",
];

/// Whether Windows reads `seg` as a device: its base name (before the
/// first dot, trailing spaces ignored) is one, in any letter case.
fn is_device_name(seg: &str) -> bool {
    let base = seg.split('.').next().unwrap_or_default().trim_end_matches(' ');
    DEVICE_NAMES.contains(&base.to_lowercase().as_str())
}

/// The longest prefix of `s` of at most `max` bytes, cut on a character
/// boundary.
fn cut_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A cut stem made whole again: no trailing dot or space (a cut never
/// leaves `..` before an extension), never empty.
fn tidy_stem(stem: &str) -> &str {
    let t = stem.trim_end_matches(['.', ' ']);
    if t.is_empty() { "unnamed" } else { t }
}

/// `raw` as one safe path segment: letters and digits (any script), `-`,
/// `_`, `.` and single inner spaces kept; anything else (separators,
/// controls, invisible or direction-changing characters, quotes…) becomes
/// `_`; no run of dots, no leading or trailing dot or space; never
/// a Windows device name; at most [`MAX_SEGMENT_CHARS`] characters and
/// [`MAX_SEGMENT_BYTES`] bytes of UTF-8; never empty.
pub fn safe_segment(raw: &str) -> String {
    let mut out = String::new();
    let mut chars = 0;
    let mut last_space = true;
    for c in raw.chars() {
        let c = if c.is_whitespace() {
            if last_space {
                continue;
            }
            last_space = true;
            ' '
        } else {
            last_space = false;
            if c.is_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        };
        // One byte is kept back for the `_` a device name gets.
        if chars >= MAX_SEGMENT_CHARS || out.len() + c.len_utf8() > MAX_SEGMENT_BYTES - 1 {
            break;
        }
        out.push(c);
        chars += 1;
    }
    // No run of dots: a segment never reads like a parent reference.
    while out.contains("..") {
        out = out.replace("..", ".");
    }
    let trimmed = out.trim_matches(|c: char| c == '.' || c == ' ');
    let mut seg = if trimmed.is_empty() {
        "unnamed".to_owned()
    } else {
        trimmed.to_owned()
    };
    if is_device_name(&seg) {
        seg.insert(0, '_');
    }
    seg
}

/// A segment of `stem` (a [`safe_segment`]) followed by `suffix` (an
/// extension, and the id and counter that make it unique), at most
/// [`MAX_SEGMENT_BYTES`] bytes: the stem is cut on a character boundary,
/// the suffix is kept whole; never a Windows device name.
fn fit_segment(stem: &str, suffix: &str) -> String {
    let room = MAX_SEGMENT_BYTES.saturating_sub(suffix.len() + 1);
    let mut seg = format!("{}{suffix}", tidy_stem(cut_bytes(stem, room)));
    if is_device_name(&seg) {
        seg.insert(0, '_');
    }
    seg
}

/// A policy's id as the suffix that tells two policies of one name apart:
/// safe, at most [`MAX_ID_BYTES`] bytes (Graph ids are GUIDs, 36).
fn id_segment(external_id: &str) -> String {
    tidy_stem(cut_bytes(&safe_segment(external_id), MAX_ID_BYTES)).to_owned()
}

/// A path a pack may hold: relative, `/`-separated safe segments.
pub fn is_safe_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\\')
        && path.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && !seg.starts_with('.')
                && !seg.chars().any(|c| c.is_control() || c == ':')
        })
}

// ---------------------------------------------------------------------------
// Redaction

/// Words that, as the last word of a key, make its value a secret
/// (compared lower-case, without `_`, `-`, `.` or spaces).
const SECRET_KEY_SUFFIXES: &[&str] = &[
    "password",
    "passphrase",
    "passcode",
    "secret",
    "secretkey",
    "presharedkey",
    "sharedkey",
    "psk",
    "wpakey",
    "wepkey",
    "networkkey",
    "keymaterial",
    "privatekey",
    "apikey",
    "token",
    "productkey",
    "recoverykey",
    "exitcode",
    "secretreferencevalueid",
    "pfx",
    "pfxblob",
    "pkcs12",
    "certificate",
    "certificateblob",
    "certblob",
    "certificatedata",
    "certificatecontent",
];

/// Markers that make an OMA-URI (or its XML content, or the text of a
/// base64 value) secret-bearing.
const SECRET_OMA_MARKERS: &[&str] = &[
    "password",
    "passphrase",
    "secret",
    "presharedkey",
    "sharedkey",
    "networkkey",
    "keymaterial",
    "privatekey",
    "psk",
    "credential",
    "certificate",
    "/wifi/",
    "wlanxml",
    "/vpnv2/",
];

/// Members that name an entry of a key/value list (`customData`,
/// `customKeyValueData`, app configuration settings), and the members that
/// hold its value.
const PAIR_NAME_MEMBERS: &[&str] = &["key", "name", "appConfigKey"];
const PAIR_VALUE_MEMBERS: &[&str] = &["value", "appConfigKeyValue"];

/// Shortest string looked into as base64, and as DER in base64 (`MII…`).
const MIN_BASE64_CHARS: usize = 64;
/// How deep base64 inside base64 is looked into.
const MAX_BASE64_DEPTH: u8 = 2;

fn compact(key: &str) -> String {
    key.chars()
        .filter(|c| !matches!(c, '_' | '-' | '.' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether a member named `key` holds a secret (its last word is one of
/// the secret words: `adminPassword`, `preSharedKey`, `apiKey`,
/// `trustedRootCertificate`; not `passwordRequired` or
/// `passwordMinimumLength`). PINs are told apart separately (a `…Pin`
/// key hides only a string).
pub fn is_secret_key(key: &str) -> bool {
    let k = compact(key);
    SECRET_KEY_SUFFIXES.iter().any(|s| k.ends_with(s))
}

/// Whether a member named `key` holds a PIN: its last word is `Pin` or
/// `PIN` (`kioskModePin`, `simPIN`, `pin`, `unlock_pin`), not a word that
/// ends in "pin" (`spin`) nor starts with it (`pinned`). Only a string
/// under such a key is a secret.
fn is_pin_key(key: &str) -> bool {
    if key.ends_with("Pin") || key.ends_with("PIN") {
        return true;
    }
    let k = key.to_ascii_lowercase();
    k == "pin"
        || k.strip_suffix("pin")
            .is_some_and(|rest| rest.ends_with(['_', '-', '.', ' ']))
}

/// Whether `v` holds something to hide: a non-empty string (not already
/// [`REDACTED`]), list or object; never a boolean or a number.
fn holds_value(v: &Value) -> bool {
    match v {
        Value::String(s) => !s.is_empty() && s != REDACTED,
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => false,
    }
}

/// Whether text names a secret (the OMA-URI markers: password, pre-shared
/// key, key material, credential, certificate…).
fn names_secret(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    SECRET_OMA_MARKERS.iter().any(|m| lower.contains(m))
}

/// Whether a string holds a certificate, a key or a Wi-Fi key by its
/// content alone: a PEM block, DER in base64 (`MII…`, 64+ characters,
/// alone or inside a larger text), profile XML with a `<keyMaterial>`; or,
/// when the whole string is base64 (64+ characters), whether its decoded
/// text holds one of those or names a secret (a base64 Wi-Fi profile,
/// mobileconfig or OMA-URI XML with a password).
pub fn looks_secret(s: &str) -> bool {
    content_is_secret(s, 0)
}

fn content_is_secret(s: &str, depth: u8) -> bool {
    let t = s.trim();
    if holds_key(t) {
        return true;
    }
    if depth >= MAX_BASE64_DEPTH || t.len() < MIN_BASE64_CHARS {
        return false;
    }
    let Some(bytes) = decode_base64(t) else {
        return false;
    };
    match bytes_as_text(&bytes) {
        Some(text) => names_secret(&text) || content_is_secret(&text, depth + 1),
        // Binary (DER, a ZIP…): only what cannot appear by chance.
        None => holds_key(&String::from_utf8_lossy(&bytes)),
    }
}

/// A PEM block, DER in base64, or Wi-Fi key material.
fn holds_key(t: &str) -> bool {
    t.contains("-----BEGIN ") || holds_der(t) || t.to_ascii_lowercase().contains("<keymaterial>")
}

/// Whether `t` holds DER in base64: `MII` at the start of a word, then
/// base64 for 64+ characters in all, wrapped lines and indentation
/// allowed (a PEM body, a plist `<data>`), its first line 16+ characters
/// (words of a sentence are not).
fn holds_der(t: &str) -> bool {
    let b = t.as_bytes();
    let is_b64 = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=');
    let mut from = 0;
    while let Some(i) = t[from..].find("MII").map(|i| i + from) {
        // Only at the start of a word: each scan stops at 64 base64
        // characters, so fewer than 22 starts share a character and the
        // whole is linear whatever the string.
        if i == 0 || !is_b64(b[i - 1]) {
            let run = &b[i..];
            let first_line = run.iter().take(16).take_while(|c| is_b64(**c)).count();
            let mut total = 0;
            for &c in run {
                if is_b64(c) {
                    total += 1;
                    if total >= MIN_BASE64_CHARS {
                        break;
                    }
                } else if !c.is_ascii_whitespace() {
                    break;
                }
            }
            if first_line >= 16 && total >= MIN_BASE64_CHARS {
                return true;
            }
        }
        from = i + 3;
    }
    false
}

/// The bytes of `s` when all of it is base64 (standard alphabet, padding
/// optional, line breaks ignored); `None` otherwise.
///
/// Written here rather than taken from a crate: opsledger-core depends on
/// no base64 crate, and redaction only needs to look inside a value (never
/// to write one, nor to reject every malformed input), which these few
/// lines do.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let body = s.trim_end_matches('=');
    if s.len() - body.len() > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() / 4 * 3 + 2);
    let (mut acc, mut bits, mut digits) = (0u32, 0u32, 0usize);
    for b in body.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'\r' | b'\n' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        digits += 1;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // One digit past a group of four is never a whole byte.
    (digits % 4 != 1).then_some(out)
}

/// Decoded bytes as text: UTF-16 (with a byte order mark, or ASCII-like
/// with every other byte zero, as Windows writes XML) or UTF-8; `None`
/// for anything else (binary).
fn bytes_as_text(b: &[u8]) -> Option<String> {
    fn utf16(body: &[u8], little: bool) -> Option<String> {
        let units = body.chunks_exact(2).map(|c| {
            if little {
                u16::from_le_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], c[1]])
            }
        });
        char::decode_utf16(units).collect::<Result<String, _>>().ok()
    }
    match b {
        [0xFF, 0xFE, rest @ ..] => utf16(rest, true),
        [0xFE, 0xFF, rest @ ..] => utf16(rest, false),
        [a, 0, c, 0, ..] if *a != 0 && *c != 0 => utf16(b, true),
        [0, a, 0, c, ..] if *a != 0 && *c != 0 => utf16(b, false),
        _ => std::str::from_utf8(b)
            .ok()
            .map(|s| s.trim_start_matches('\u{feff}').to_owned()),
    }
}

/// An object's `@odata.type`, lower-case, without `#microsoft.graph.`.
fn odata_kind(obj: &Map<String, Value>) -> Option<String> {
    let t = obj.get("@odata.type")?.as_str()?.to_ascii_lowercase();
    Some(
        t.trim_start_matches('#')
            .trim_start_matches("microsoft.graph.")
            .to_owned(),
    )
}

/// Redacts `obj[key]` when it holds something ([`holds_value`]).
fn redact_member(obj: &mut Map<String, Value>, key: &str) -> usize {
    match obj.get_mut(key) {
        Some(v) if holds_value(v) => {
            *v = Value::String(REDACTED.into());
            1
        }
        _ => 0,
    }
}

/// Redacts the `value` of one OMA-URI setting when it is secret-bearing.
fn redact_oma_setting(obj: &mut Map<String, Value>, kind: &str) -> usize {
    let uri = obj
        .get("omaUri")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_ascii_lowercase();
    let value = obj.get("value").and_then(Value::as_str).unwrap_or_default();
    let encrypted = obj.get("isEncrypted").and_then(Value::as_bool) == Some(true);
    let secret = encrypted
        || kind == "omasettingbase64"
        || (matches!(kind, "omasettingstring" | "omasettingstringxml")
            && (names_secret(&uri) || names_secret(value) || looks_secret(value)));
    match obj.get_mut("value") {
        Some(v) if secret && !v.is_null() && *v != Value::String(REDACTED.into()) => {
            *v = Value::String(REDACTED.into());
            1
        }
        _ => 0,
    }
}

/// Redacts what an object's type says is secret: the `value` of an OMA-URI
/// setting ([`redact_oma_setting`]) or of a settings catalog secret
/// (`…SecretSettingValue`), the `payload` of an imported or custom profile
/// (`…ImportConfiguration`, `…CustomConfiguration`: base64 Wi-Fi XML,
/// mobileconfig), and the value of a key/value entry named by a secret
/// word (`{"key": "password", "value": …}`).
fn redact_by_shape(obj: &mut Map<String, Value>) -> usize {
    let mut n = 0;
    // A normalized policy has lost its annotations (`@odata.type` with
    // them): an object with an OMA-URI and a text value is an OMA-URI
    // setting, judged as a string one (by its URI and its value).
    let kind = odata_kind(obj).or_else(|| {
        (obj.contains_key("omaUri") && obj.get("value").is_some_and(Value::is_string))
            .then(|| "omasettingstring".to_owned())
    });
    if let Some(kind) = kind {
        if kind.starts_with("omasetting") {
            n += redact_oma_setting(obj, &kind);
        }
        if kind.ends_with("secretsettingvalue") {
            n += redact_member(obj, "value");
        }
        if kind.ends_with("importconfiguration") || kind.ends_with("customconfiguration") {
            n += redact_member(obj, "payload");
        }
    }
    let secret_pair = PAIR_NAME_MEMBERS
        .iter()
        .filter_map(|m| obj.get(*m).and_then(Value::as_str))
        .any(|name| is_secret_key(name) || is_pin_key(name));
    if secret_pair {
        for m in PAIR_VALUE_MEMBERS {
            n += redact_member(obj, m);
        }
    }
    n
}

/// Replaces every secret-bearing value of `value` with [`REDACTED`] (the
/// rules of the module's documentation); returns how many were replaced.
pub fn redact(value: &mut Value) -> usize {
    match value {
        Value::String(s) if looks_secret(s) => {
            *s = REDACTED.into();
            1
        }
        Value::Array(items) => items.iter_mut().map(redact).sum(),
        Value::Object(obj) => {
            let mut n = redact_by_shape(obj);
            for (k, v) in obj.iter_mut() {
                let secret = (is_secret_key(k) && holds_value(v))
                    || (is_pin_key(k) && v.is_string() && holds_value(v));
                if secret {
                    *v = Value::String(REDACTED.into());
                    n += 1;
                } else {
                    n += redact(v);
                }
            }
            n
        }
        _ => 0,
    }
}

/// Redacts both sides of a drift change whose path names a secret member
/// (`wifi/preSharedKey`), a settings catalog setting whose definition id
/// ends in a secret word (`settings[setting:…_password]/…`), or an OMA-URI
/// setting that names one (`omaSettings[omaUri:./…/Password]/value`), and
/// any secret inside them. A PIN member (`kioskModePin`) is redacted when
/// it is a string.
pub fn redact_change(change: &mut Change) -> usize {
    let lower = change.path.to_ascii_lowercase();
    let by_path = change.path.split('/').any(|seg| {
        let (member, key) = seg.split_once('[').unwrap_or((seg, ""));
        is_secret_key(member)
            || key
                .strip_prefix("setting:")
                .is_some_and(|id| is_secret_key(id.trim_end_matches(']')))
    }) || (lower.contains("omasetting") && names_secret(&lower));
    let pin = change
        .path
        .rsplit('/')
        .next()
        .is_some_and(|last| is_pin_key(last.split('[').next().unwrap_or(last)));
    let mut n = 0;
    for v in [&mut change.baseline, &mut change.current].into_iter().flatten() {
        let hide = (by_path && !v.is_null() && !v.is_boolean() && !v.is_number())
            || (pin && v.is_string() && holds_value(v));
        if hide {
            *v = Value::String(REDACTED.into());
            n += 1;
        } else {
            n += redact(v);
        }
    }
    n
}

// ---------------------------------------------------------------------------
// CSV

/// Whether a spreadsheet could run `cell` as a formula: after optional
/// whitespace it starts with `=`, `+`, `-` or `@`, or it starts with a tab
/// or a carriage return.
fn reads_as_formula(cell: &str) -> bool {
    cell.starts_with(['\t', '\r']) || cell.trim_start().starts_with(['=', '+', '-', '@'])
}

/// Whether `cell` is a bare word (ASCII letters, digits, `_`): nothing in
/// it can split a cell, in any delimiter of any locale, or start a formula.
fn is_bare(cell: &str) -> bool {
    !cell.is_empty() && cell.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// One CSV record (RFC 4180, CRLF-terminated). Every cell is quoted, so a
/// spreadsheet splitting on another delimiter (`;` where `,` is the decimal
/// separator) never cuts a cell in two — unless every cell is a bare word
/// (a header: `policy_type,id,…`), which no delimiter splits. A cell a
/// spreadsheet would run as a formula (`=`, `+`, `-`, `@` after optional
/// whitespace; a tab or CR first) is prefixed with `'`.
pub fn csv_record<S: AsRef<str>>(fields: &[S]) -> Vec<u8> {
    let guarded: Vec<String> = fields
        .iter()
        .map(|f| {
            let f = f.as_ref();
            if reads_as_formula(f) {
                format!("'{f}")
            } else {
                f.to_owned()
            }
        })
        .collect();
    let style = if guarded.iter().all(|c| is_bare(c)) {
        csv::QuoteStyle::Necessary
    } else {
        csv::QuoteStyle::Always
    };
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .quote_style(style)
        .from_writer(Vec::new());
    w.write_record(&guarded).expect("writing into a Vec cannot fail");
    w.into_inner().expect("writing into a Vec cannot fail")
}

/// The columns of `inventory/<type>.csv`.
pub const INVENTORY_COLUMNS: &[&str] = &[
    "policy_type",
    "id",
    "display_name",
    "odata_type",
    "last_modified",
    "assignments",
    "last_seen_at",
];

/// One inventory row: the columns of [`INVENTORY_COLUMNS`], as JSON.
pub fn inventory_row(
    policy_type: &str,
    external_id: &str,
    display_name: &str,
    payload: &Value,
    last_seen_at: &str,
) -> Value {
    let text = |k: &str| payload.get(k).and_then(Value::as_str).unwrap_or_default();
    json!({
        "policy_type": policy_type,
        "id": external_id,
        "display_name": display_name,
        "odata_type": text("@odata.type"),
        "last_modified": text("lastModifiedDateTime"),
        "assignments": payload.get("assignments").and_then(Value::as_array).map_or(0, Vec::len),
        "last_seen_at": last_seen_at,
    })
}

/// A JSON row as CSV cells, in `columns` order.
pub fn row_cells(row: &Value, columns: &[&str]) -> Vec<String> {
    columns
        .iter()
        .map(|c| match row.get(*c) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        })
        .collect()
}

/// The columns of `assignments.csv`.
pub const ASSIGNMENT_COLUMNS: &[&str] = &[
    "policy_type",
    "policy_id",
    "policy_name",
    "intent",
    "target_type",
    "group_id",
    "filter_id",
    "filter_type",
];

/// The rows of `assignments.csv` for one policy's payload.
pub fn assignment_rows(
    policy_type: &str,
    external_id: &str,
    display_name: &str,
    payload: &Value,
) -> Vec<Vec<String>> {
    let Some(list) = payload.get("assignments").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .map(|a| {
            let target = a.get("target").cloned().unwrap_or(Value::Null);
            let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
            vec![
                policy_type.to_owned(),
                external_id.to_owned(),
                display_name.to_owned(),
                text(a, "intent"),
                text(&target, "@odata.type")
                    .trim_start_matches("#microsoft.graph.")
                    .to_owned(),
                text(&target, "groupId"),
                text(&target, "deviceAndAppManagementAssignmentFilterId"),
                text(&target, "deviceAndAppManagementAssignmentFilterType"),
            ]
        })
        .collect()
}

/// The columns of `findings.csv`.
pub const FINDING_COLUMNS: &[&str] = &[
    "kind",
    "policy_type",
    "policy_name",
    "baseline_id",
    "current_id",
    "path",
    "baseline",
    "current",
];

/// A finding as the pack shows it, redacted when asked.
pub fn finding_for_pack(mut finding: Finding, redact_secrets: bool) -> Finding {
    if redact_secrets {
        for c in &mut finding.changes {
            redact_change(c);
        }
    }
    finding
}

/// The rows of `findings.csv` for one finding: one per change (one row
/// with empty change columns for `missing` and `unexpected`).
pub fn finding_rows(f: &Finding) -> Vec<Vec<String>> {
    let head = [
        f.kind.as_str().to_owned(),
        f.policy_type.clone(),
        f.display_name.clone(),
        f.baseline_external_id.clone().unwrap_or_default(),
        f.current_external_id.clone().unwrap_or_default(),
    ];
    let side = |v: &Option<Value>| match v {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    };
    if f.changes.is_empty() {
        let mut row = head.to_vec();
        row.extend([String::new(), String::new(), String::new()]);
        return vec![row];
    }
    f.changes
        .iter()
        .map(|c| {
            let mut row = head.to_vec();
            row.push(c.path.clone());
            row.push(side(&c.baseline));
            row.push(side(&c.current));
            row
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Manifest

/// `manifest.json`: what the pack holds, each file with its size and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    /// The generating run (also the pack's id).
    pub run_id: String,
    pub workspace_id: String,
    pub tenant_id: String,
    /// The inventory the pack describes: as it was at this time (RFC 3339).
    pub as_of: String,
    pub options: PackOptions,
    pub files: Vec<ManifestFile>,
}

/// One file of the pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

impl Manifest {
    /// The manifest's bytes (pretty JSON, a trailing newline).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = serde_json::to_vec_pretty(self).expect("a manifest serializes");
        b.push(b'\n');
        b
    }

    /// A manifest read back from a pack; `Err` says why it is not one.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, String> {
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| format!("manifest.json is not a manifest: {e}"))?;
        if m.format != MANIFEST_FORMAT {
            return Err(format!(
                "manifest.json has format {:?}, not {MANIFEST_FORMAT}",
                m.format
            ));
        }
        let mut seen = BTreeSet::new();
        for f in &m.files {
            if !is_safe_path(&f.path) || f.path == MANIFEST_PATH || !seen.insert(fold_case(&f.path)) {
                return Err(format!(
                    "manifest.json lists an unsafe or repeated path {:?}",
                    f.path
                ));
            }
        }
        Ok(m)
    }
}

/// `context.review_pack` of a generation: `id` (the generating run's id:
/// one pack per run), `files` (entries besides the manifest), `sha256` and
/// `size_bytes` of the ZIP, `download_url`.
pub fn context_entry(workspace_id: &str, run_id: &str, files: u64, sha256: &str, size: u64) -> Value {
    json!({
        "id": run_id,
        "files": files,
        "sha256": sha256,
        "size_bytes": size,
        "download_url": download_url(workspace_id, run_id),
    })
}

/// Where a pack is downloaded.
pub fn download_url(workspace_id: &str, pack_id: &str) -> String {
    format!("/api/v1/workspaces/{workspace_id}/review-packs/{pack_id}/download")
}

// ---------------------------------------------------------------------------
// Index

/// One policy type in the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeLine {
    pub key: String,
    pub label: String,
    pub policies: u64,
}

/// The latest complete backup set, for the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupLine {
    pub id: String,
    pub name: String,
    pub items: u64,
    pub created_at: String,
}

/// The latest compare, for the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompareLine {
    pub run_id: String,
    pub baseline: String,
    pub findings: u64,
    pub recorded_at: String,
}

/// The latest evidence snapshot, for the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvidenceLine {
    Snapshot {
        id: String,
        items: u64,
        created_at: String,
    },
    /// The tenant has none.
    None,
}

/// What `index.md` and `index.html` say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSummary {
    pub tenant_name: String,
    pub tenant_id: String,
    pub run_id: String,
    pub as_of: String,
    pub options: PackOptions,
    pub types: Vec<TypeLine>,
    pub backup: Option<BackupLine>,
    pub compare: Option<CompareLine>,
    pub evidence: EvidenceLine,
    /// Files of the pack (the manifest excluded).
    pub files: u64,
}

fn md(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '{' | '}' | '[' | ']' | '<' | '>' | '(' | ')' | '#' | '+' | '!'
            | '|' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn on_off(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Lines of the summary as (label, value) pairs, shared by both renderings.
fn facts(s: &IndexSummary) -> Vec<(&'static str, String)> {
    let total: u64 = s.types.iter().map(|t| t.policies).sum();
    let backup = match &s.backup {
        Some(b) => format!("{} ({} items, {}; id {})", b.name, b.items, b.created_at, b.id),
        None => "none: the tenant has no complete backup set".into(),
    };
    let compare = match &s.compare {
        Some(c) => format!(
            "{} findings against {} ({}; run {})",
            c.findings, c.baseline, c.recorded_at, c.run_id
        ),
        None => "none: the tenant has not been compared with a baseline".into(),
    };
    let evidence = match &s.evidence {
        EvidenceLine::Snapshot {
            id,
            items,
            created_at,
        } => format!("{items} items ({created_at}; id {id})"),
        EvidenceLine::None => "none: the tenant has no sealed evidence snapshot".into(),
    };
    let types = match &s.options.types {
        Some(t) => t.join(", "),
        None => "every inventoried type".into(),
    };
    vec![
        ("Tenant", format!("{} ({})", s.tenant_name, s.tenant_id)),
        ("Inventory as of", s.as_of.clone()),
        ("Policies", format!("{total} in {} types", s.types.len())),
        ("Latest complete backup", backup),
        ("Latest compare", compare),
        ("Latest evidence snapshot", evidence),
        ("Types covered", types),
        (
            "Options",
            format!(
                "policies: {}, assignments: {}, findings: {}, secrets redacted: {}",
                on_off(s.options.include_policies),
                on_off(s.options.include_assignments),
                on_off(s.options.include_findings),
                on_off(s.options.redact)
            ),
        ),
        ("Files", format!("{} (and manifest.json)", s.files)),
        ("Generated by run", s.run_id.clone()),
    ]
}

/// `index.md`.
pub fn index_markdown(s: &IndexSummary) -> String {
    let mut out = format!("# Review pack: {}\n\n", md(&s.tenant_name));
    for (k, v) in facts(s) {
        out.push_str(&format!("- **{k}**: {}\n", md(&v)));
    }
    out.push_str("\n## Inventory per policy type\n\n| Type | Key | Policies |\n|---|---|---:|\n");
    for t in &s.types {
        out.push_str(&format!(
            "| {} | `{}` | {} |\n",
            md(&t.label),
            t.key.replace('`', "'"),
            t.policies
        ));
    }
    out.push_str("\n`manifest.json` lists every file of this pack with its size and SHA-256.\n");
    out
}

/// `index.html` (self-contained, no script, no remote resource).
pub fn index_html(s: &IndexSummary) -> String {
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Review pack: {0}</title>\n\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}td.n{{text-align:right}}</style>\n\
         </head>\n<body>\n<h1>Review pack: {0}</h1>\n<dl>\n",
        html(&s.tenant_name)
    );
    for (k, v) in facts(s) {
        out.push_str(&format!("<dt>{}</dt><dd>{}</dd>\n", html(k), html(&v)));
    }
    out.push_str("</dl>\n<h2>Inventory per policy type</h2>\n<table>\n<tr><th>Type</th><th>Key</th><th>Policies</th></tr>\n");
    for t in &s.types {
        out.push_str(&format!(
            "<tr><td>{}</td><td><code>{}</code></td><td class=\"n\">{}</td></tr>\n",
            html(&t.label),
            html(&t.key),
            t.policies
        ));
    }
    out.push_str("</table>\n<p><code>manifest.json</code> lists every file of this pack with its size and SHA-256.</p>\n</body>\n</html>\n");
    out
}

// ---------------------------------------------------------------------------
// Reconciliation

/// The run being reconciled.
#[derive(Debug, Clone, Copy)]
pub struct PackScope<'a> {
    pub run_id: &'a str,
    pub workspace_id: &'a str,
    pub tenant_id: &'a str,
    /// The run's `total`, if set.
    pub total: Option<u64>,
    /// `context.review_pack`, if written.
    pub context: Option<&'a Value>,
}

/// What reading a ZIP's bytes showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZipCheck {
    /// The manifest, or why it could not be read.
    pub manifest: Result<Manifest, String>,
    /// Entries besides the manifest.
    pub entries: u64,
    /// Paths whose bytes differ from the manifest, or that one side lacks.
    pub mismatched: Vec<String>,
}

/// One committed file of the run that could be its pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackCandidate {
    pub name: String,
    pub row_size: u64,
    pub row_sha256: String,
    /// Size and SHA-256 of the stored bytes; `None` when they are missing.
    pub stored: Option<(u64, String)>,
    /// What reading the ZIP showed; `None` when it was not read.
    pub zip: Option<ZipCheck>,
}

fn failed(code: &str, explanation: String) -> AdapterResult {
    AdapterResult::new(Verdict::Failed, code, explanation)
}

/// A stale generation decided from its own committed ZIP: `succeeded` only
/// when exactly one ZIP of this run exists, its bytes' SHA-256 matches its
/// row and `context.review_pack`, its manifest is this run's and lists
/// `total` files, and every entry matches the manifest. Anything else is
/// `failed`, never `succeeded`.
pub fn reconcile_pack(scope: PackScope<'_>, candidates: &[PackCandidate]) -> AdapterResult {
    if let Some(id) = scope
        .context
        .and_then(|c| c.get("id"))
        .and_then(Value::as_str)
        .filter(|id| *id != scope.run_id)
    {
        return failed(
            "proof_wrong_scope",
            format!("context.review_pack names pack {id}, which is not this run's own"),
        );
    }
    if candidates.len() > 1 {
        return failed(
            "proof_ambiguous",
            format!(
                "{} ZIP files claim to be this run's pack; none is trusted",
                candidates.len()
            ),
        );
    }
    let Some(c) = candidates.first() else {
        return AdapterResult::stale_no_proof("This review pack generation");
    };
    let artifact = json!({"kind": "review_pack", "id": scope.run_id, "file": c.name, "sha256": c.row_sha256});
    let fail = |code: &str, why: String| failed(code, why).with_artifact(artifact.clone());
    let Some((size, sha)) = &c.stored else {
        return fail(
            "review_pack_file_missing",
            format!("{} is recorded but its bytes are not in the file store", c.name),
        );
    };
    if *sha != c.row_sha256 || *size != c.row_size {
        return fail(
            "review_pack_checksum_mismatch",
            format!(
                "the stored bytes of {} do not match the SHA-256 and size recorded for it",
                c.name
            ),
        );
    }
    let context_sha = scope
        .context
        .and_then(|v| v.get("sha256"))
        .and_then(Value::as_str);
    if context_sha != Some(c.row_sha256.as_str()) {
        return fail(
            "review_pack_checksum_mismatch",
            "context.review_pack does not name the SHA-256 of the committed ZIP".into(),
        );
    }
    let Some(zip) = &c.zip else {
        return fail(
            "review_pack_unreadable",
            format!("{} could not be read back", c.name),
        );
    };
    let manifest = match &zip.manifest {
        Ok(m) => m,
        Err(e) => return fail("review_pack_manifest_invalid", e.clone()),
    };
    if manifest.run_id != scope.run_id
        || manifest.workspace_id != scope.workspace_id
        || manifest.tenant_id != scope.tenant_id
    {
        return fail(
            "proof_wrong_scope",
            "the pack's manifest names another run, workspace or tenant".into(),
        );
    }
    let listed = manifest.files.len() as u64;
    let Some(total) = scope.total.filter(|t| *t == listed && *t == zip.entries) else {
        return fail(
            "review_pack_incomplete",
            format!(
                "the manifest lists {listed} files and the ZIP holds {}, but the run planned {}",
                zip.entries,
                scope.total.map_or("no total".to_owned(), |t| t.to_string())
            ),
        );
    };
    if !zip.mismatched.is_empty() {
        return fail(
            "review_pack_entry_mismatch",
            format!(
                "{} entries do not match the manifest (first: {})",
                zip.mismatched.len(),
                zip.mismatched[0]
            ),
        );
    }
    AdapterResult::new(
        Verdict::Succeeded,
        "review_pack_complete",
        format!("the pack's ZIP holds all {total} planned files, each matching its manifest, and its checksum holds"),
    )
    .with_artifact(artifact)
    .with_units_succeeded(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RunType;
    use crate::drift::FindingKind;

    fn heads(list: &[(&str, &str, &str)]) -> Vec<PolicyHead> {
        list.iter()
            .map(|(t, id, n)| PolicyHead {
                policy_type: (*t).into(),
                external_id: (*id).into(),
                display_name: (*n).into(),
            })
            .collect()
    }

    #[test]
    fn an_oma_setting_normalized_without_its_type_is_still_redacted() {
        let raw = json!({"omaSettings": [
            {"@odata.type": "#microsoft.graph.omaSettingString", "displayName": "Local admin password",
             "omaUri": "./Device/Vendor/MSFT/Accounts/Users/opsadmin/Password", "value": "Pa55-w0rd!"},
            {"@odata.type": "#microsoft.graph.omaSettingInteger", "displayName": "Minimum PIN length",
             "omaUri": "./Device/Vendor/MSFT/PassportForWork/Policies/PINComplexity/MinimumPINLength", "value": 6},
        ]});
        let mut normalized = crate::normalize::normalize(&raw, &Default::default());
        assert!(normalized.to_string().contains("Pa55-w0rd!"));
        assert_eq!(redact(&mut normalized), 1);
        let text = normalized.to_string();
        assert!(!text.contains("Pa55-w0rd!") && text.contains(REDACTED), "{text}");
        assert!(text.contains("\"value\":6"), "a number stays: {text}");
    }

    #[test]
    fn params_default_on_and_dropped_when_on() {
        let v = crate::params::validate(RunType::ReviewPackGenerate, &json!({})).unwrap();
        assert_eq!(PackOptions::from_params(&v), PackOptions::default());
        let v = crate::params::validate(
            RunType::ReviewPackGenerate,
            &json!({"redact": true, "include_findings": false, "types": ["namedLocations", "deviceConfigurations"]}),
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"include_findings": false, "types": ["deviceConfigurations", "namedLocations"]}),
            "true is the default, so it is dropped; types are sorted"
        );
        let o = PackOptions::from_params(&v);
        assert!(!o.include_findings && o.redact && o.include_policies);
        for bad in [
            json!({"types": ["nope"]}),
            json!({"types": []}),
            json!({"redact": "no"}),
            json!({"include_policies": 0}),
            json!({"zip": true}),
        ] {
            assert!(
                crate::params::validate(RunType::ReviewPackGenerate, &bad).is_err(),
                "{bad}"
            );
        }
        let listed = serde_json::to_value(crate::params::specs(RunType::ReviewPackGenerate)).unwrap();
        assert_eq!(listed[4]["name"], "redact");
        assert_eq!(listed[4]["type"], "boolean");
        assert_eq!(listed[4]["default"], "true");
    }

    #[test]
    fn the_plan_follows_the_options_and_counts_every_file_but_the_manifest() {
        let policies = heads(&[
            ("deviceConfigurations", "a", "Wi-Fi"),
            ("deviceConfigurations", "b", "Baseline"),
            ("namedLocations", "c", "Office"),
        ]);
        let types = vec!["deviceConfigurations".to_owned(), "namedLocations".to_owned()];
        let all = plan(&PackOptions::default(), &types, &policies, true).unwrap();
        let paths: Vec<&str> = all.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "index.md",
                "index.html",
                "inventory/deviceConfigurations.csv",
                "inventory/deviceConfigurations.json",
                "inventory/namedLocations.csv",
                "inventory/namedLocations.json",
                "policies/deviceConfigurations/Wi-Fi.json",
                "policies/deviceConfigurations/Baseline.json",
                "policies/namedLocations/Office.json",
                "assignments.csv",
                "findings.csv",
                "findings.json",
            ]
        );
        // Each option that removes files lowers the total, and only by its files.
        let without = |f: fn(&mut PackOptions)| {
            let mut o = PackOptions::default();
            f(&mut o);
            plan(&o, &o.selected_types(&types), &policies, true)
                .unwrap()
                .len()
        };
        assert_eq!(without(|o| o.include_policies = false), 12 - 3);
        assert_eq!(without(|o| o.include_assignments = false), 12 - 1);
        assert_eq!(without(|o| o.include_findings = false), 12 - 2);
        assert_eq!(without(|o| o.redact = false), 12);
        assert_eq!(
            without(|o| o.types = Some(vec!["namedLocations".into()])),
            12 - 2 - 2
        );
        // No compare: no findings files.
        assert_eq!(
            plan(&PackOptions::default(), &types, &policies, false)
                .unwrap()
                .len(),
            10
        );
    }

    #[test]
    fn paths_are_safe_and_unique_whatever_the_names() {
        let hostile = heads(&[
            ("deviceConfigurations", "1", "../../etc/passwd"),
            ("deviceConfigurations", "2", "/abs/path"),
            ("deviceConfigurations", "3", "Same"),
            ("deviceConfigurations", "4", "same"),
            ("deviceConfigurations", "5", "same"),
            ("deviceConfigurations", "6", ""),
            ("deviceConfigurations", "7", "CON"),
            ("deviceConfigurations", "8", "evil\u{202e}gpj.exe"),
            ("deviceConfigurations", "9", "a\\b:c*d?e\"f<g>h|i\u{0}j"),
            ("deviceConfigurations", "10", "..."),
            ("deviceConfigurations", "11", &"x".repeat(500)),
            ("deviceConfigurations", "../12", "manifest"),
            ("deviceConfigurations", "13", "Richtlinie für Geräte"),
        ]);
        let types = vec!["deviceConfigurations".to_owned()];
        let entries = plan(&PackOptions::default(), &types, &hostile, false).unwrap();
        let mut seen = BTreeSet::new();
        for e in &entries {
            assert!(is_safe_path(&e.path), "{:?}", e.path);
            assert!(!e.path.contains(".."), "{:?}", e.path);
            assert!(!e.path.contains('\u{202e}'), "{:?}", e.path);
            assert!(seen.insert(e.path.to_lowercase()), "unique: {:?}", e.path);
            for seg in e.path.split('/') {
                assert!(seg.chars().count() <= MAX_SEGMENT_CHARS + 30, "{seg:?}");
            }
        }
        let policy_paths: Vec<&str> = entries
            .iter()
            .filter(|e| matches!(e.kind, EntryKind::Policy { .. }))
            .map(|e| e.path.as_str())
            .collect();
        assert_eq!(policy_paths.len(), hostile.len());
        assert!(policy_paths.contains(&"policies/deviceConfigurations/_CON.json"));
        assert!(policy_paths.contains(&"policies/deviceConfigurations/same (4).json"));
        assert!(policy_paths.contains(&"policies/deviceConfigurations/Richtlinie für Geräte.json"));
        assert_eq!(safe_segment(".."), "unnamed");
        assert_eq!(safe_segment(" a  b "), "a b");
        assert!(
            !is_safe_path("../x") && !is_safe_path("/x") && !is_safe_path("a//b") && !is_safe_path(".hidden")
        );
    }

    #[test]
    fn secret_keys_are_the_last_word_only() {
        for k in [
            "preSharedKey",
            "password",
            "adminPassword",
            "wpaKey",
            "trustedRootCertificate",
            "pfxBlob",
            "sharedSecret",
            "clientSecret",
            "keyMaterial",
            "pre_shared_key",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in [
            "passwordRequired",
            "passwordMinimumLength",
            "passwordRequiredType",
            "certificateValidityPeriodScale",
            "displayName",
            "ssid",
            "wiFiSecurityType",
        ] {
            assert!(!is_secret_key(k), "{k}");
        }
    }

    const CERT: &str =
        "MIIDdzCCAl+gAwIBAgIEAgAAuTANBgkqhkiG9w0BAQUFADBaMQswCQYDVQQGEwJJRTESMBAGA1UEChMJQmFsdGltb3Jl";

    #[test]
    fn redaction_removes_wifi_keys_certificates_and_oma_secrets_and_keeps_the_rest() {
        let mut wifi = json!({
            "@odata.type": "#microsoft.graph.windowsWifiConfiguration",
            "displayName": "Wi-Fi",
            "ssid": "CORP",
            "wifiSecurityType": "wpa2Personal",
            "preSharedKey": "hunter2-psk",
            "passwordRequired": true,
            "passwordMinimumLength": 8,
            "trustedRootCertificate": CERT,
            "notes": format!("-----BEGIN CERTIFICATE-----\n{CERT}\n-----END CERTIFICATE-----"),
            "nested": {"wepKey": "abc", "list": [CERT]},
            "omaSettings": [
                {"@odata.type": "#microsoft.graph.omaSettingString", "omaUri": "./Device/Vendor/MSFT/Accounts/LocalAdminPassword", "value": "P@ssw0rd!"},
                {"@odata.type": "#microsoft.graph.omaSettingStringXml", "omaUri": "./Vendor/MSFT/WiFi/Profile/CORP/WlanXml", "value": "<WLANProfile><keyMaterial>xml-psk</keyMaterial></WLANProfile>"},
                {"@odata.type": "#microsoft.graph.omaSettingBase64", "omaUri": "./Vendor/MSFT/RootCATrustedCertificates/Root/abc/EncodedCertificate", "fileName": "root.cer", "value": "AAAAcert"},
                {"@odata.type": "#microsoft.graph.omaSettingString", "omaUri": "./Device/Vendor/MSFT/Policy/Config/Start/HideSleep", "value": "keep-me"},
                {"@odata.type": "#microsoft.graph.omaSettingInteger", "omaUri": "./Device/Vendor/MSFT/Policy/Config/Pwd/MinLength", "value": 12},
                {"@odata.type": "#microsoft.graph.omaSettingString", "omaUri": "./Device/Vendor/MSFT/Other", "value": "enc", "isEncrypted": true}
            ]
        });
        let n = redact(&mut wifi);
        let text = wifi.to_string();
        for secret in [
            "hunter2-psk",
            CERT,
            "abc\"",
            "P@ssw0rd!",
            "xml-psk",
            "AAAAcert",
            "\"enc\"",
        ] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        for kept in [
            "keep-me",
            "CORP",
            "wpa2Personal",
            "root.cer",
            "LocalAdminPassword",
        ] {
            assert!(text.contains(kept), "{kept} lost: {text}");
        }
        assert_eq!(wifi["passwordRequired"], true);
        assert_eq!(wifi["passwordMinimumLength"], 8);
        assert_eq!(wifi["omaSettings"][4]["value"], 12);
        assert_eq!(wifi["preSharedKey"], REDACTED);
        assert_eq!(n, 9, "{wifi:#}");
        // Idempotent: a redacted value is not redacted again.
        assert_eq!(redact(&mut wifi), 0);
    }

    #[test]
    fn findings_changes_are_redacted_by_path_and_content() {
        let mut f = Finding {
            kind: FindingKind::Changed,
            policy_type: "deviceConfigurations".into(),
            display_name: "Wi-Fi".into(),
            baseline_external_id: Some("a".into()),
            current_external_id: Some("b".into()),
            changes: vec![
                Change {
                    path: "preSharedKey".into(),
                    baseline: Some(json!("old-psk")),
                    current: Some(json!("new-psk")),
                },
                Change {
                    path: "omaSettings[omaUri:./Vendor/MSFT/Accounts/AdminPassword]/value".into(),
                    baseline: Some(json!("old-pw")),
                    current: None,
                },
                Change {
                    path: "ssid".into(),
                    baseline: Some(json!("A")),
                    current: Some(json!(CERT)),
                },
                Change {
                    path: "passwordRequired".into(),
                    baseline: Some(json!(false)),
                    current: Some(json!(true)),
                },
            ],
        };
        f = finding_for_pack(f, true);
        let text = serde_json::to_string(&f).unwrap();
        for secret in ["old-psk", "new-psk", "old-pw", CERT] {
            assert!(!text.contains(secret), "{secret}: {text}");
        }
        assert_eq!(f.changes[2].baseline, Some(json!("A")));
        assert_eq!(f.changes[3].current, Some(json!(true)));
        let rows = finding_rows(&f);
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0].len(), FINDING_COLUMNS.len());
    }

    #[test]
    fn csv_cells_are_quoted_and_formulas_defused() {
        assert_eq!(csv_record(&["a", "b"]), b"a,b\r\n");
        assert_eq!(
            csv_record(&["x,y", "say \"hi\"", "line\nbreak"]),
            b"\"x,y\",\"say \"\"hi\"\"\",\"line\nbreak\"\r\n"
        );
        assert_eq!(
            csv_record(&["=HYPERLINK(\"x\")", "@SUM", "-1", "+1"]),
            b"\"'=HYPERLINK(\"\"x\"\")\",\"'@SUM\",\"'-1\",\"'+1\"\r\n"
        );
    }

    #[test]
    fn csv_cells_are_always_quoted_and_formulas_after_whitespace_defused() {
        // A `;` locale splits an unquoted `x;=cmd…` into a formula cell.
        assert_eq!(
            csv_record(&["x;=cmd|' /C calc'!A0"]),
            b"\"x;=cmd|' /C calc'!A0\"\r\n"
        );
        assert_eq!(
            csv_record(&["a", "b c", ""]),
            b"\"a\",\"b c\",\"\"\r\n",
            "one cell that is not a bare word quotes every cell"
        );
        assert_eq!(
            csv_record(&["  =1+1", "\t=x", "\rx", " @SUM(A1)", "\n-2", "\u{a0}+3"]),
            "\"'  =1+1\",\"'\t=x\",\"'\rx\",\"' @SUM(A1)\",\"'\n-2\",\"'\u{a0}+3\"\r\n".as_bytes()
        );
        // Look-alikes that are no formula stay as written.
        assert_eq!(
            csv_record(&["1-2", "a=b", "x@y.z", "Wi-Fi"]),
            b"\"1-2\",\"a=b\",\"x@y.z\",\"Wi-Fi\"\r\n"
        );
        // A header of bare words is written as it always was.
        assert!(csv_record(INVENTORY_COLUMNS).starts_with(b"policy_type,id,display_name,"));
        assert_eq!(csv_record(&["a", "b_2"]), b"a,b_2\r\n");
        // Every cell of a data row is quoted, a bare one too.
        let row = row_cells(
            &inventory_row(
                "deviceConfigurations",
                "a",
                "A;=1",
                &json!({}),
                "2026-02-02T00:00:00Z",
            ),
            INVENTORY_COLUMNS,
        );
        let line = String::from_utf8(csv_record(&row)).unwrap();
        assert!(
            line.starts_with("\"deviceConfigurations\",\"a\",\"A;=1\","),
            "{line}"
        );
    }

    /// Base64 (standard, padded) for the tests.
    fn b64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            }
            for _ in chunk.len()..3 {
                out.push('=');
            }
        }
        out
    }

    fn utf16le_with_bom(s: &str) -> Vec<u8> {
        let mut out = vec![0xFF, 0xFE];
        out.extend(s.encode_utf16().flat_map(u16::to_le_bytes));
        out
    }

    #[test]
    fn base64_is_decoded_with_or_without_padding() {
        assert_eq!(decode_base64("aGVsbG8gd29ybGQ=").unwrap(), b"hello world");
        assert_eq!(decode_base64("aGVsbG8gd29ybGQ").unwrap(), b"hello world");
        assert_eq!(decode_base64("aGVs\r\nbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64("").unwrap(), b"");
        for bad in ["a", "aGVsb", "aGV$bG8=", "aGVsbG8===", "aGVs bG8=", "a-b_"] {
            assert!(decode_base64(bad).is_none(), "{bad}");
        }
        let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        for len in 0..all.len() {
            assert_eq!(decode_base64(&b64(&all[..len])).unwrap(), &all[..len], "{len}");
        }
        assert_eq!(
            bytes_as_text(&utf16le_with_bom("<keyMaterial>")).as_deref(),
            Some("<keyMaterial>")
        );
        assert_eq!(bytes_as_text(&[0xC3, 0x28, 0x00, 0xFF]), None);
        // Linear whatever the string: many `MII` starts are no slower.
        assert!(!looks_secret(&"MII ".repeat(200_000)));
        assert!(!looks_secret(&format!("MII{}", " ".repeat(1_000_000))));
    }

    #[test]
    fn settings_catalog_secret_values_are_redacted() {
        let secret = |t: &str, v: &str| json!({"@odata.type": t, "value": v, "valueState": "notEncrypted"});
        let mut policy = json!({
            "name": "Kiosk",
            "settings": [
                {"settingInstance": {
                    "@odata.type": "#microsoft.graph.deviceManagementConfigurationSimpleSettingInstance",
                    "settingDefinitionId": "device_vendor_msft_x",
                    "simpleSettingValue": secret("#microsoft.graph.deviceManagementConfigurationSecretSettingValue", "P@ss")}},
                {"settingInstance": {
                    "settingDefinitionId": "device_vendor_msft_y",
                    "simpleSettingValue": secret("#Microsoft.Graph.DeviceManagementConfigurationSECRETSettingValue", "Upper-case-type")}},
                {"settingInstance": {
                    "settingDefinitionId": "device_vendor_msft_z",
                    "simpleSettingValue": {"@odata.type": "#microsoft.graph.deviceManagementConfigurationStringSettingValue", "value": "keep-me"}}},
                {"settingInstance": {
                    "settingDefinitionId": "device_vendor_msft_w",
                    "simpleSettingValue": {"@odata.type": "#microsoft.graph.deviceManagementConfigurationIntegerSettingValue", "value": 7}}}
            ]
        });
        assert_eq!(redact(&mut policy), 2, "{policy:#}");
        let text = policy.to_string();
        assert!(
            !text.contains("P@ss") && !text.contains("Upper-case-type"),
            "{text}"
        );
        let value = |i: usize| &policy["settings"][i]["settingInstance"]["simpleSettingValue"];
        assert_eq!(value(0)["value"], REDACTED);
        assert_eq!(value(0)["valueState"], "notEncrypted");
        assert_eq!(value(2)["value"], "keep-me");
        assert_eq!(value(3)["value"], 7);
        assert_eq!(redact(&mut policy), 0);
    }

    #[test]
    fn base64_payloads_are_redacted_by_type_and_by_content() {
        let wlan = "<?xml version=\"1.0\"?><WLANProfile xmlns=\"http://www.microsoft.com/networking/WLAN/profile/v1\">\
                    <name>CORP</name><MSM><security><sharedKey><keyType>passPhrase</keyType><protected>false</protected>\
                    <keyMaterial>wifi-key-123</keyMaterial></sharedKey></security></MSM></WLANProfile>";
        let mobileconfig = "<?xml version=\"1.0\"?><plist version=\"1.0\"><dict><key>PayloadContent</key><array><dict>\
                            <key>Password</key><string>mc-secret-456</string></dict></array></dict></plist>";
        let harmless = "<?xml version=\"1.0\"?><plist version=\"1.0\"><dict><key>AllowCamera</key><true/>\
                        <key>PayloadDisplayName</key><string>Restrictions</string></dict></plist>";
        let pem = format!("-----BEGIN CERTIFICATE-----\n{CERT}\n-----END CERTIFICATE-----\n");
        let mut policy = json!({
            "profiles": [
                {"@odata.type": "#microsoft.graph.windows81WifiImportConfiguration",
                 "payloadFileName": "corp.xml", "profileName": "CORP", "payload": b64(wlan.as_bytes())},
                {"@odata.type": "#microsoft.graph.iosCustomConfiguration",
                 "payloadName": "Restrictions", "payloadFileName": "r.mobileconfig", "payload": b64(harmless.as_bytes())},
                {"@odata.type": "#microsoft.graph.macOSCustomConfiguration",
                 "payloadName": "Mail", "payload": "c2hvcnQ="},
                {"@odata.type": "#microsoft.graph.windows10CustomConfiguration", "omaSettings": [
                    {"@odata.type": "#microsoft.graph.omaSettingStringXml", "omaUri": "./Vendor/MSFT/Policy/Config/X",
                     "fileName": "a.xml", "value": b64(wlan.as_bytes())},
                    {"@odata.type": "#microsoft.graph.omaSettingStringXml", "omaUri": "./Vendor/MSFT/Policy/Config/Y",
                     "fileName": "b.xml", "value": b64(harmless.as_bytes())}
                ]}
            ],
            // Content alone: base64 found under keys that say nothing.
            "configurationXml": b64(mobileconfig.as_bytes()),
            "utf16Profile": b64(&utf16le_with_bom(wlan)),
            "pemFile": b64(pem.as_bytes()),
            "derAsText": b64(CERT.as_bytes()),
            "twice": b64(b64(wlan.as_bytes()).as_bytes()),
            "plist": format!("<dict><key>PayloadContent</key><data>\n\t\t{}\n\t\t{}\n\t</data></dict>", &CERT[..46], &CERT[46..]),
            // Look-alikes that stay.
            "harmlessXml": b64(harmless.as_bytes()),
            "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "binary": b64(&(0..=255u8).collect::<Vec<u8>>()),
            "sentence": "MIIT guidance: this policy allows users to sign in with a work account on any device they use",
            "description": "Password policy for kiosk devices, see the passwordRequired setting",
        });
        let before = policy.clone();
        let n = redact(&mut policy);
        let text = policy.to_string();
        for gone in [
            ("profiles", 0, "payload"),
            ("profiles", 1, "payload"),
            ("profiles", 2, "payload"),
        ] {
            assert_eq!(policy[gone.0][gone.1][gone.2], REDACTED, "{gone:?}");
        }
        assert_eq!(policy["profiles"][3]["omaSettings"][0]["value"], REDACTED);
        for key in [
            "configurationXml",
            "utf16Profile",
            "pemFile",
            "derAsText",
            "twice",
            "plist",
        ] {
            assert_eq!(policy[key], REDACTED, "{key}");
        }
        assert!(!text.contains(&b64(wlan.as_bytes())), "{text}");
        for kept in ["harmlessXml", "sha256", "binary", "sentence", "description"] {
            assert_eq!(policy[kept], before[kept], "{kept}");
        }
        assert_eq!(
            policy["profiles"][3]["omaSettings"][1]["value"],
            before["profiles"][3]["omaSettings"][1]["value"]
        );
        assert_eq!(policy["profiles"][0]["payloadFileName"], "corp.xml");
        assert_eq!(policy["profiles"][1]["payloadName"], "Restrictions");
        assert_eq!(n, 10, "{policy:#}");
        assert_eq!(redact(&mut policy), 0);
    }

    #[test]
    fn key_value_lists_and_more_secret_names_are_redacted() {
        let mut policy = json!({
            "customData": [
                {"key": "password", "value": "kv-secret-1"},
                {"key": "serverUrl", "value": "https://keep.example"}
            ],
            "customKeyValueData": [
                {"name": "apiKey", "value": "kv-secret-2"},
                {"name": "kioskPin", "value": "kv-secret-3"},
                {"name": "passwordRequired", "value": "true"},
                {"name": "pinned", "value": "keep-pinned"}
            ],
            "settings": [
                {"appConfigKey": "vpnPassword", "appConfigKeyType": "stringType", "appConfigKeyValue": "kv-secret-4"},
                {"appConfigKey": "userName", "appConfigKeyType": "stringType", "appConfigKeyValue": "keep-user"}
            ],
            "sharedSecretKey": "name-secret-1",
            "apiKey": "name-secret-2",
            "passcode": "name-secret-3",
            "kioskModePin": "name-secret-4",
            "simPIN": "name-secret-5",
            "unlock_pin": "name-secret-6",
            "kioskModeExitCode": "name-secret-7",
            "clientSecret": "name-secret-8",
            "secretReferenceValueId": "name-secret-9",
            "passwordRequired": true,
            "passwordMinimumLength": 8,
            "passcodeRequired": true,
            "passcodeMinimumLength": 6,
            "passcodeRequiredType": "numeric",
            "kioskModePinRequired": true,
            "pinned": true,
            "pinnedApps": ["keep-app"],
            "appPin": 1234,
            "spin": "keep-spin",
            "kioskModeExitCodeRequired": false
        });
        let before = policy.clone();
        let n = redact(&mut policy);
        let text = policy.to_string();
        for i in 1..=4 {
            assert!(!text.contains(&format!("kv-secret-{i}")), "{i}: {text}");
        }
        for i in 1..=9 {
            assert!(!text.contains(&format!("name-secret-{i}")), "{i}: {text}");
        }
        for kept in [
            "keep.example",
            "keep-pinned",
            "keep-user",
            "keep-app",
            "keep-spin",
        ] {
            assert!(text.contains(kept), "{kept} lost: {text}");
        }
        assert_eq!(policy["customKeyValueData"][2]["value"], "true");
        for k in [
            "passwordRequired",
            "passwordMinimumLength",
            "passcodeRequired",
            "passcodeMinimumLength",
            "passcodeRequiredType",
            "kioskModePinRequired",
            "pinned",
            "appPin",
            "kioskModeExitCodeRequired",
        ] {
            assert_eq!(policy[k], before[k], "{k}");
        }
        assert_eq!(
            policy["customData"][0]["key"], "password",
            "the key stays, its value goes"
        );
        assert_eq!(n, 13, "{policy:#}");
        assert_eq!(redact(&mut policy), 0);

        for k in [
            "sharedSecretKey",
            "apiKey",
            "passcode",
            "kioskModeExitCode",
            "secretReferenceValueId",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in ["kioskModePin", "simPIN", "pin", "unlock_pin", "Device PIN"] {
            assert!(is_pin_key(k), "{k}");
        }
        for k in [
            "pinned",
            "spin",
            "pinnedApps",
            "kioskModePinRequired",
            "pinCodeLength",
            "Spin",
        ] {
            assert!(!is_pin_key(k), "{k}");
        }
    }

    #[test]
    fn findings_hide_pins_and_catalog_settings_named_as_secrets() {
        let change = |path: &str, b: Value, c: Value| Change {
            path: path.into(),
            baseline: Some(b),
            current: Some(c),
        };
        let mut f = Finding {
            kind: FindingKind::Changed,
            policy_type: "configurationPolicies".into(),
            display_name: "Kiosk".into(),
            baseline_external_id: Some("a".into()),
            current_external_id: Some("b".into()),
            changes: vec![
                change("kioskModePin", json!("1111"), json!("2222")),
                change("pinned", json!(false), json!(true)),
                change(
                    "settings[setting:com.apple.wifi.managed_password]/settingInstance/simpleSettingValue/value",
                    json!("old-wifi"),
                    json!("new-wifi"),
                ),
                change(
                    "settings[setting:device_vendor_msft_laps_policies_passwordagedays]/settingInstance/simpleSettingValue/value",
                    json!(30),
                    json!(60),
                ),
                change(
                    "customData",
                    json!([{"key": "password", "value": "old-kv"}]),
                    json!([]),
                ),
            ],
        };
        f = finding_for_pack(f, true);
        let text = serde_json::to_string(&f).unwrap();
        for secret in ["1111", "2222", "old-wifi", "new-wifi", "old-kv"] {
            assert!(!text.contains(secret), "{secret}: {text}");
        }
        assert_eq!(f.changes[1].current, Some(json!(true)));
        assert_eq!(f.changes[3].current, Some(json!(60)));
    }

    #[test]
    fn segments_are_capped_in_bytes_and_keep_their_id() {
        // A 3-byte letter.
        let long_cjk = "中".repeat(100);
        // A 4-byte letter (CJK Extension B).
        let long_wide = "\u{20000}".repeat(100);
        let long_type = "ü".repeat(120);
        let cut_at_dot = format!("{}x. yy", "é".repeat(69));
        let policies = heads(&[
            ("deviceConfigurations", "e1", &long_cjk),
            ("deviceConfigurations", "e2", &long_cjk),
            ("deviceConfigurations", "dup", &long_wide),
            ("deviceConfigurations", "dup", &long_wide),
            ("deviceConfigurations", "dup", &long_wide),
            ("deviceConfigurations", &"i".repeat(300), &long_wide),
            ("deviceConfigurations", "d0", &cut_at_dot),
            // ` (d).json`: the name is cut right after its dot, which goes too.
            ("deviceConfigurations", "d", &cut_at_dot),
            (&long_type, "t1", "Short"),
        ]);
        let types = vec!["deviceConfigurations".to_owned(), long_type.clone()];
        let entries = plan(&PackOptions::default(), &types, &policies, false).unwrap();
        for e in &entries {
            assert!(is_safe_path(&e.path), "{:?}", e.path);
            for seg in e.path.split('/') {
                assert!(seg.len() <= MAX_SEGMENT_BYTES, "{} bytes: {seg:?}", seg.len());
                assert!(
                    !seg.contains("..") && !seg.contains(". (") && !seg.contains(" ."),
                    "{seg:?}"
                );
            }
        }
        let policy_paths: Vec<&str> = entries
            .iter()
            .filter(|e| matches!(e.kind, EntryKind::Policy { .. }))
            .map(|e| e.path.as_str())
            .collect();
        assert_eq!(policy_paths.len(), policies.len());
        assert!(policy_paths[0].ends_with("中.json"), "{}", policy_paths[0]);
        assert!(policy_paths[1].ends_with("中 (e2).json"), "{}", policy_paths[1]);
        assert!(
            policy_paths[3].ends_with("\u{20000} (dup).json"),
            "{}",
            policy_paths[3]
        );
        assert!(
            policy_paths[4].ends_with("\u{20000} (dup) 2.json"),
            "{}",
            policy_paths[4]
        );
        let id = "i".repeat(MAX_ID_BYTES);
        assert!(
            policy_paths[5].ends_with(&format!("\u{20000} ({id}).json")),
            "{}",
            policy_paths[5]
        );
        assert!(policy_paths[7].ends_with("éx (d).json"), "{}", policy_paths[7]);
        assert!(
            entries
                .iter()
                .any(|e| e.path.starts_with("inventory/ü") && e.path.ends_with("ü.csv")),
            "{entries:?}"
        );
        let seg = safe_segment(&long_cjk);
        assert!(
            seg.len() < MAX_SEGMENT_BYTES && seg.chars().all(|c| c == '中'),
            "{seg}"
        );
        assert_eq!(safe_segment(&"x".repeat(500)).len(), MAX_SEGMENT_CHARS);
    }

    #[test]
    fn case_is_folded_fully_and_every_device_name_is_guarded() {
        let policies = heads(&[
            ("deviceConfigurations", "a", "Straße"),
            ("deviceConfigurations", "b", "STRASSE"),
            ("deviceConfigurations", "c", "ſtrasse"),
        ]);
        let types = vec!["deviceConfigurations".to_owned()];
        let paths: Vec<String> = plan(&PackOptions::default(), &types, &policies, false)
            .unwrap()
            .into_iter()
            .filter(|e| matches!(e.kind, EntryKind::Policy { .. }))
            .map(|e| e.path)
            .collect();
        assert_eq!(
            paths,
            [
                "policies/deviceConfigurations/Straße.json",
                "policies/deviceConfigurations/STRASSE (b).json",
                "policies/deviceConfigurations/ſtrasse (c).json",
            ]
        );
        let mut dup = manifest(2);
        dup.files[0].path = "Straße.csv".into();
        dup.files[1].path = "STRASSE.csv".into();
        assert!(Manifest::parse(&dup.to_bytes()).is_err());

        for (raw, seg) in [
            ("COM¹", "_COM¹"),
            ("com²", "_com²"),
            ("COM³.txt", "_COM³.txt"),
            ("LPT¹", "_LPT¹"),
            ("lpt²", "_lpt²"),
            ("Lpt³.json", "_Lpt³.json"),
            ("COM0", "_COM0"),
            ("LPT0", "_LPT0"),
            ("CON .txt", "_CON .txt"),
            ("nul", "_nul"),
            ("COM10", "COM10"),
            ("COM¹x", "COM¹x"),
            ("console", "console"),
        ] {
            assert_eq!(safe_segment(raw), seg, "{raw}");
        }
        let device = heads(&[("deviceConfigurations", "x", "LPT³")]);
        let entries = plan(&PackOptions::default(), &types, &device, false).unwrap();
        assert!(
            entries
                .iter()
                .any(|e| e.path == "policies/deviceConfigurations/_LPT³.json")
        );
    }

    #[test]
    fn rows_of_inventory_and_assignments() {
        let payload = json!({"@odata.type": "#microsoft.graph.x", "lastModifiedDateTime": "2026-01-01T00:00:00Z",
            "assignments": [{"target": {"@odata.type": "#microsoft.graph.groupAssignmentTarget", "groupId": "g1",
                "deviceAndAppManagementAssignmentFilterId": null, "deviceAndAppManagementAssignmentFilterType": "none"}}]});
        let row = inventory_row("deviceConfigurations", "a", "A", &payload, "2026-02-02T00:00:00Z");
        let cells = row_cells(&row, INVENTORY_COLUMNS);
        assert_eq!(
            cells,
            [
                "deviceConfigurations",
                "a",
                "A",
                "#microsoft.graph.x",
                "2026-01-01T00:00:00Z",
                "1",
                "2026-02-02T00:00:00Z"
            ]
        );
        let rows = assignment_rows("deviceConfigurations", "a", "A", &payload);
        assert_eq!(
            rows,
            vec![vec![
                "deviceConfigurations",
                "a",
                "A",
                "",
                "groupAssignmentTarget",
                "g1",
                "",
                "none"
            ]]
        );
        assert!(assignment_rows("t", "i", "n", &json!({})).is_empty());
    }

    #[test]
    fn the_index_escapes_names() {
        let s = IndexSummary {
            tenant_name: "<script>alert(1)</script> | *x*".into(),
            tenant_id: "t".into(),
            run_id: "r".into(),
            as_of: "2026-01-01T00:00:00Z".into(),
            options: PackOptions::default(),
            types: vec![TypeLine {
                key: "deviceConfigurations".into(),
                label: "Device configuration profiles".into(),
                policies: 3,
            }],
            backup: None,
            compare: Some(CompareLine {
                run_id: "c".into(),
                baseline: "snapshot s".into(),
                findings: 2,
                recorded_at: "2026-01-01T00:00:00Z".into(),
            }),
            evidence: EvidenceLine::None,
            files: 9,
        };
        let h = index_html(&s);
        assert!(!h.contains("<script>"), "{h}");
        assert!(h.contains("&lt;script&gt;"));
        assert!(h.contains("2 findings"));
        let m = index_markdown(&s);
        assert!(
            m.contains("\\<script\\>") && m.contains("\\|") && m.contains("\\*x\\*"),
            "{m}"
        );
        assert!(
            m.contains("| Device configuration profiles | `deviceConfigurations` | 3 |"),
            "{m}"
        );
    }

    fn manifest(files: u64) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT.into(),
            run_id: "r".into(),
            workspace_id: "w".into(),
            tenant_id: "t".into(),
            as_of: "2026-01-01T00:00:00Z".into(),
            options: PackOptions::default(),
            files: (0..files)
                .map(|i| ManifestFile {
                    path: format!("f{i}.csv"),
                    size: 1,
                    sha256: "00".into(),
                })
                .collect(),
        }
    }

    #[test]
    fn manifests_round_trip_and_refuse_unsafe_paths() {
        let m = manifest(3);
        assert_eq!(Manifest::parse(&m.to_bytes()).unwrap(), m);
        let mut bad = manifest(1);
        bad.files[0].path = "../x".into();
        assert!(Manifest::parse(&bad.to_bytes()).is_err());
        let mut dup = manifest(2);
        dup.files[1].path = "F0.csv".into();
        assert!(Manifest::parse(&dup.to_bytes()).is_err());
        assert!(Manifest::parse(b"{}").is_err());
    }

    #[test]
    fn only_a_complete_matching_own_pack_reconciles_as_succeeded() {
        let ctx = json!({"id": "r", "sha256": "abc", "files": 3});
        fn scope(total: Option<u64>, ctx: Option<&Value>) -> PackScope<'_> {
            PackScope {
                run_id: "r",
                workspace_id: "w",
                tenant_id: "t",
                total,
                context: ctx,
            }
        }
        let good = PackCandidate {
            name: PACK_FILE_NAME.into(),
            row_size: 10,
            row_sha256: "abc".into(),
            stored: Some((10, "abc".into())),
            zip: Some(ZipCheck {
                manifest: Ok(manifest(3)),
                entries: 3,
                mismatched: Vec::new(),
            }),
        };
        let ok = reconcile_pack(scope(Some(3), Some(&ctx)), std::slice::from_ref(&good));
        assert_eq!(
            (ok.verdict, ok.reason_code.as_str()),
            (Verdict::Succeeded, "review_pack_complete")
        );
        assert_eq!(ok.units_succeeded, Some(3));

        let code = |s: PackScope<'_>, c: &[PackCandidate]| {
            let r = reconcile_pack(s, c);
            assert_eq!(r.verdict, Verdict::Failed, "{r:?}");
            r.reason_code
        };
        let with = |f: &dyn Fn(&mut PackCandidate)| {
            let mut c = good.clone();
            f(&mut c);
            vec![c]
        };
        assert_eq!(code(scope(Some(3), Some(&ctx)), &[]), "stale_no_proof");
        assert_eq!(
            code(scope(Some(3), Some(&ctx)), &[good.clone(), good.clone()]),
            "proof_ambiguous"
        );
        let foreign = json!({"id": "other", "sha256": "abc"});
        assert_eq!(
            code(scope(Some(3), Some(&foreign)), std::slice::from_ref(&good)),
            "proof_wrong_scope"
        );
        assert_eq!(
            code(scope(Some(3), Some(&ctx)), &with(&|c| c.stored = None)),
            "review_pack_file_missing"
        );
        assert_eq!(
            code(
                scope(Some(3), Some(&ctx)),
                &with(&|c| c.stored = Some((10, "zzz".into())))
            ),
            "review_pack_checksum_mismatch"
        );
        assert_eq!(
            code(scope(Some(3), None), std::slice::from_ref(&good)),
            "review_pack_checksum_mismatch"
        );
        assert_eq!(
            code(
                scope(Some(3), Some(&ctx)),
                &with(&|c| c.zip.as_mut().unwrap().manifest = Err("bad".into()))
            ),
            "review_pack_manifest_invalid"
        );
        assert_eq!(
            code(
                scope(Some(3), Some(&ctx)),
                &with(&|c| c.zip.as_mut().unwrap().manifest.as_mut().unwrap().tenant_id = "x".into())
            ),
            "proof_wrong_scope"
        );
        assert_eq!(
            code(scope(Some(4), Some(&ctx)), std::slice::from_ref(&good)),
            "review_pack_incomplete"
        );
        assert_eq!(
            code(scope(None, Some(&ctx)), std::slice::from_ref(&good)),
            "review_pack_incomplete"
        );
        assert_eq!(
            code(
                scope(Some(3), Some(&ctx)),
                &with(&|c| c.zip.as_mut().unwrap().entries = 2)
            ),
            "review_pack_incomplete"
        );
        assert_eq!(
            code(
                scope(Some(3), Some(&ctx)),
                &with(&|c| c.zip.as_mut().unwrap().mismatched = vec!["f1.csv".into()])
            ),
            "review_pack_entry_mismatch"
        );
        assert_eq!(
            code(scope(Some(3), Some(&ctx)), &with(&|c| c.zip = None)),
            "review_pack_unreadable"
        );
    }
}
