//! Secret-bearing policies planted in every demo tenant's
//! `deviceConfigurations` (after the generated ones, once whatever the
//! scale): a Wi-Fi profile with a pre-shared key, a trusted root
//! certificate, and a custom profile whose OMA-URI settings carry a local
//! admin password, a Wi-Fi profile XML with its key material and a
//! certificate file. Real tenants hold such values; a review pack must
//! never show them (`redact`), and tests look for these exact strings.

use super::{digest, guid};
use crate::Policy;
use serde_json::json;

/// The Wi-Fi profile's pre-shared key.
pub const WIFI_PRE_SHARED_KEY: &str = "demo-PSK-7f3a9c21-CorpWifi!";
/// The trusted root certificate (DER, base64), also the OMA-URI certificate file.
pub const CERTIFICATE_BLOB: &str = "MIIDdzCCAl+gAwIBAgIEAgAAuTANBgkqhkiG9w0BAQUFADBaMQswCQYDVQQGEwJJRTESMBAGA1UEChMJQmFsdGltb3JlMRMwEQYDVQQLEwpDeWJlclRydXN0MSIwIAYDVQQDExlCYWx0aW1vcmUgQ3liZXJUcnVzdCBSb290MB4XDTAwMDUxMjE4NDYwMFoXDTI1MDUxMjIzNTkwMFowWjELMAkGA1UEBhMCSUUxEjAQBgNVBAoTCUJhbHRpbW9yZTETMBEGA1UECxMKQ3liZXJUcnVzdDEiMCAGA1UEAxMZQmFsdGltb3JlIEN5YmVyVHJ1c3QgUm9vdA==";
/// The local admin password an OMA-URI setting sets.
pub const OMA_ADMIN_PASSWORD: &str = "demo-LocalAdmin-Pa55w0rd-41b7";
/// The key material inside the OMA-URI Wi-Fi profile XML.
pub const OMA_WIFI_KEY_MATERIAL: &str = "demo-WlanXml-KeyMaterial-88e2";

/// The planted policies of `type_key` for `tenant`.
pub(super) fn policies(tenant: &str, type_key: &str) -> Vec<Policy> {
    if type_key != "deviceConfigurations" {
        return Vec::new();
    }
    let id = |name: &str| guid(&digest(&[tenant, type_key, "planted", name]));
    let base = |id: &str, name: &str, odata: &str| {
        json!({
            "@odata.type": format!("#microsoft.graph.{odata}"),
            "id": id,
            "displayName": name,
            "description": "Planted by the demo: holds a secret a review pack must redact",
            "createdDateTime": "2025-06-01T08:00:00Z",
            "lastModifiedDateTime": "2026-02-01T08:00:00Z",
            "roleScopeTagIds": ["0"],
            "version": 1,
        })
    };
    let mut out = Vec::new();
    let mut add = |name: &str, odata: &str, extra: serde_json::Value| {
        let pid = id(name);
        let d = digest(&[tenant, type_key, "planted", name]);
        let mut payload = base(&pid, name, odata);
        let obj = payload.as_object_mut().expect("object");
        for (k, v) in extra.as_object().expect("object") {
            obj.insert(k.clone(), v.clone());
        }
        obj.insert("assignments".into(), super::assignments(tenant, &pid, &d));
        out.push(Policy {
            id: pid,
            display_name: name.to_owned(),
            payload,
        });
    };
    add(
        "Wi-Fi - Corporate WPA2 PSK",
        "windowsWifiConfiguration",
        json!({
            "ssid": "CORP-WIFI", "networkName": "CORP-WIFI", "connectAutomatically": true,
            "connectWhenNetworkNameIsHidden": false, "wifiSecurityType": "wpa2Personal",
            "preSharedKey": WIFI_PRE_SHARED_KEY, "proxySetting": "none",
        }),
    );
    add(
        "Certificate - Corporate Root CA",
        "windows81TrustedRootCertificate",
        json!({
            "certFileName": "corp-root-ca.cer", "destinationStore": "computerCertStoreRoot",
            "trustedRootCertificate": CERTIFICATE_BLOB,
        }),
    );
    add(
        "Custom - Local admin and Wi-Fi (OMA-URI)",
        "windows10CustomConfiguration",
        json!({
            "omaSettings": [
                {"@odata.type": "#microsoft.graph.omaSettingString", "displayName": "Local admin password",
                 "omaUri": "./Device/Vendor/MSFT/Accounts/Users/opsadmin/Password", "value": OMA_ADMIN_PASSWORD},
                {"@odata.type": "#microsoft.graph.omaSettingStringXml", "displayName": "Guest Wi-Fi",
                 "omaUri": "./Vendor/MSFT/WiFi/Profile/GUEST-WIFI/WlanXml", "fileName": "guest.xml",
                 "value": format!("<WLANProfile><name>GUEST-WIFI</name><MSM><security><sharedKey><keyType>passPhrase</keyType><protected>false</protected><keyMaterial>{OMA_WIFI_KEY_MATERIAL}</keyMaterial></sharedKey></security></MSM></WLANProfile>")},
                {"@odata.type": "#microsoft.graph.omaSettingBase64", "displayName": "Root certificate",
                 "omaUri": "./Device/Vendor/MSFT/RootCATrustedCertificates/Root/0563B8630D62D75ABBC8AB1E4BDFB5A899B24D43/EncodedCertificate",
                 "fileName": "corp-root-ca.cer", "value": CERTIFICATE_BLOB},
                {"@odata.type": "#microsoft.graph.omaSettingInteger", "displayName": "Minimum PIN length",
                 "omaUri": "./Device/Vendor/MSFT/PassportForWork/Policies/PINComplexity/MinimumPINLength", "value": 6},
            ],
        }),
    );
    out
}
