//! The pod annotations (`tether.dev/…`), parsed and then injected into a
//! minimal pod: the patch built from any accepted annotations must apply to
//! that pod. Input: `key=value` items separated by NUL bytes.
#![no_main]

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use kube_deploy::annotations::{AnnotationVerdict, TetherRequest};
use kube_deploy::{InjectionOutcome, InjectorConfig, inject};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(annotations) = tether_fuzz::annotations(data) else {
        return;
    };
    let verdict = TetherRequest::from_annotations(&annotations);
    match &verdict {
        Ok(v) => tether_fuzz::outcome(matches!(v, AnnotationVerdict::Requested(_)), &""),
        Err(e) => tether_fuzz::outcome(false, e),
    }
    let mut pod = Pod::default();
    pod.metadata.name = Some("fuzz".into());
    pod.metadata.annotations = Some(annotations);
    pod.spec = Some(PodSpec {
        containers: vec![Container {
            name: "app".into(),
            image: Some("app:1".into()),
            ..Container::default()
        }],
        ..PodSpec::default()
    });
    let outcome = inject(&pod, &InjectorConfig::default());
    match (&verdict, &outcome) {
        (Err(_), Ok(InjectionOutcome::Patched { .. })) => {
            panic!("refused annotations were injected")
        }
        (Ok(AnnotationVerdict::NotRequested), Ok(o)) => {
            assert_eq!(o, &InjectionOutcome::NotRequested)
        }
        _ => {}
    }
    if let Ok(InjectionOutcome::Patched { patch, .. }) = outcome {
        let mut doc = serde_json::to_value(&pod).expect("a pod serialises");
        json_patch::patch(&mut doc, &patch).expect("the patch applies to the pod it was built for");
        let patched: Pod = serde_json::from_value(doc).expect("the patched pod is a pod");
        // A second pass is a no-op.
        assert_eq!(
            inject(&patched, &InjectorConfig::default()).ok(),
            Some(InjectionOutcome::AlreadyInjected)
        );
    }
});
