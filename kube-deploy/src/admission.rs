//! AdmissionReview v1 on the wire: the request fields the webhook reads and
//! the response it writes.
//!
//! Hand-written rather than taken from `kube::core::admission`, for two
//! reasons:
//! - **the patch encoding.** The API server reads `response.patch` as a Go
//!   `[]byte`, whose documented JSON form is a base64 string. kube-core
//!   serialises it as an array of numbers (kube-rs issue #1781), which Go's
//!   decoder happens to accept but is not the documented form, and is
//!   about 2.7 times the size of the base64 string (3.6 characters per
//!   byte of patch against 1.33);
//! - **one parse.** The request's `object` is kept as raw JSON
//!   ([`RawValue`]) until the webhook knows it is a pod CREATE, then parsed
//!   once, straight into a typed `Pod`: no intermediate `serde_json::Value`
//!   trees.
//!
//! Unknown fields (`userInfo`, `oldObject`, `options`, `dryRun`, …) are
//! ignored; a missing `uid`, `kind`, `resource` or `operation` is a parse
//! error, answered with HTTP 400 by [`crate::webhook::review`].

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// An incoming AdmissionReview: only `apiVersion`, `kind` and `request`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ReviewIn<'a> {
    /// Expected `admission.k8s.io/v1`.
    #[serde(default)]
    pub api_version: String,
    /// Expected `AdmissionReview`.
    #[serde(default)]
    pub kind: String,
    /// The request; absent in a malformed review.
    #[serde(borrow, default)]
    pub request: Option<RequestIn<'a>>,
}

/// The request part of an AdmissionReview.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RequestIn<'a> {
    /// Identifies the request; copied into the response.
    pub uid: String,
    /// Kind of the object (`{"group": "", "version": "v1", "kind": "Pod"}`).
    pub kind: GroupVersionKind,
    /// Resource being admitted (`pods`).
    pub resource: GroupVersionResource,
    /// Sub-resource (`ephemeralcontainers`, `status`, …), if any.
    #[serde(default)]
    pub sub_resource: Option<String>,
    /// Namespace of the object.
    #[serde(default)]
    pub namespace: Option<String>,
    /// `CREATE`, `UPDATE`, `DELETE` or `CONNECT`.
    pub operation: String,
    /// The object as sent, parsed only when it is a pod CREATE.
    #[serde(borrow, default)]
    pub object: Option<&'a RawValue>,
}

/// `group`, `version`, `kind` of the admitted object.
#[derive(Debug, Deserialize)]
pub(crate) struct GroupVersionKind {
    /// API group; empty for the core group.
    #[serde(default)]
    pub group: String,
    /// Kind, e.g. `Pod`.
    pub kind: String,
}

/// `group`, `version`, `resource` of the admitted object.
#[derive(Debug, Deserialize)]
pub(crate) struct GroupVersionResource {
    /// Resource, e.g. `pods`.
    pub resource: String,
}

/// The AdmissionReview the webhook answers with.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StatusOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
}

/// The `metav1.Status` of a denial: HTTP 403 and the message the user sees.
#[derive(Debug, Serialize)]
struct StatusOut {
    status: &'static str,
    code: u16,
    reason: &'static str,
    message: String,
}

/// What the webhook decided for one request.
#[derive(Debug)]
pub(crate) enum Verdict<'a> {
    /// Allowed unchanged.
    Allow,
    /// Allowed with this JSON patch (already serialised) and warnings.
    Patch {
        /// The JSON patch document, RFC 6902.
        patch: &'a [u8],
        /// Warnings shown to the client (`kubectl` prints them).
        warnings: &'a [String],
    },
    /// Refused with this message.
    Deny(String),
}

/// Serialises the AdmissionReview answering the request `uid`.
pub(crate) fn response_body(uid: &str, verdict: Verdict<'_>) -> Result<Vec<u8>, serde_json::Error> {
    let mut response = ResponseOut {
        uid,
        allowed: true,
        status: None,
        patch: None,
        patch_type: None,
        warnings: &[],
    };
    match verdict {
        Verdict::Allow => {}
        Verdict::Patch { patch, warnings } => {
            response.patch = Some(base64::engine::general_purpose::STANDARD.encode(patch));
            response.patch_type = Some("JSONPatch");
            response.warnings = warnings;
        }
        Verdict::Deny(message) => {
            response.allowed = false;
            response.status = Some(StatusOut {
                status: "Failure",
                code: 403,
                reason: "Forbidden",
                message,
            });
        }
    }
    serde_json::to_vec(&ReviewOut {
        api_version: crate::webhook::ADMISSION_API_VERSION,
        kind: "AdmissionReview",
        response,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn the_patch_is_a_base64_string_and_warnings_ride_along() {
        let warnings = vec!["tether: careful".to_owned()];
        let body = response_body(
            "u-1",
            Verdict::Patch {
                patch: br#"[{"op":"add","path":"/x","value":1}]"#,
                warnings: &warnings,
            },
        )
        .unwrap();
        let doc: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(doc["kind"], "AdmissionReview");
        assert_eq!(doc["response"]["uid"], "u-1");
        assert_eq!(doc["response"]["allowed"], true);
        assert_eq!(doc["response"]["patchType"], "JSONPatch");
        assert_eq!(
            doc["response"]["patch"],
            "W3sib3AiOiJhZGQiLCJwYXRoIjoiL3giLCJ2YWx1ZSI6MX1d"
        );
        assert_eq!(doc["response"]["warnings"], json!(["tether: careful"]));
        assert!(doc["response"].get("status").is_none());
    }

    #[test]
    fn allow_and_deny_carry_no_patch() {
        let allow: Value =
            serde_json::from_slice(&response_body("a", Verdict::Allow).unwrap()).unwrap();
        assert_eq!(
            allow,
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                   "response": {"uid": "a", "allowed": true}})
        );
        let deny: Value =
            serde_json::from_slice(&response_body("d", Verdict::Deny("no".into())).unwrap())
                .unwrap();
        assert_eq!(deny["response"]["allowed"], false);
        assert_eq!(deny["response"]["status"]["code"], 403);
        assert_eq!(deny["response"]["status"]["message"], "no");
        assert!(deny["response"].get("patch").is_none());
        assert!(deny["response"].get("patchType").is_none());
    }

    #[test]
    fn a_request_keeps_its_object_raw_and_requires_its_identity() {
        let body = json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "operation": "CREATE", "userInfo": {"username": "x"},
                "object": {"metadata": {"name": "p"}}}
        })
        .to_string();
        let review: ReviewIn<'_> = serde_json::from_str(&body).unwrap();
        let request = review.request.unwrap();
        assert_eq!(
            request.object.unwrap().get(),
            r#"{"metadata":{"name":"p"}}"#
        );
        assert_eq!(request.namespace, None);

        for missing in ["uid", "kind", "resource", "operation"] {
            let mut doc: Value = serde_json::from_str(&body).unwrap();
            doc["request"].as_object_mut().unwrap().remove(missing);
            let text = doc.to_string();
            let error = serde_json::from_str::<ReviewIn<'_>>(&text).unwrap_err();
            assert!(error.to_string().contains(missing), "{error}");
        }
    }
}
