//! The webhook's request handling, `kube_deploy::webhook::review`: decode
//! an AdmissionReview, decide, answer. Every answer must be well-formed.
#![no_main]

use kube_deploy::WebhookConfig;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

static CONFIG: OnceLock<WebhookConfig> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let config = CONFIG.get_or_init(WebhookConfig::default);
    let answer = kube_deploy::webhook::review(data, config);
    tether_fuzz::outcome(answer.status == 200, &answer.status);
    let body: serde_json::Value =
        serde_json::from_slice(&answer.body).expect("every answer is JSON");
    match answer.status {
        200 => {
            let response = &body["response"];
            assert!(response["uid"].as_str().is_some_and(|u| !u.is_empty()));
            assert!(response["allowed"].is_boolean());
        }
        400 | 500 => assert!(body["error"].is_string()),
        other => panic!("unexpected status {other}"),
    }
});
