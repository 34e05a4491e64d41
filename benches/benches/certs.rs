//! webhook-certs: time to generate a CA plus a serving certificate (the
//! work of a first start or a CA rotation; goal ≤ 20 ms for ECDSA), and
//! time to swap a bundle into the in-memory rustls resolver.
//!
//! Run: `cargo bench -p benches --bench certs`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use time::OffsetDateTime;
use webhook_certs::{CertRequest, CertResolver, KeyAlgorithm, RotationPolicy, generate_bundle};

fn request(algorithm: KeyAlgorithm) -> CertRequest {
    CertRequest::new("tether-webhook", "tether")
        .unwrap()
        .with_key_algorithm(algorithm)
}

fn generation(c: &mut Criterion) {
    let policy = RotationPolicy::default();
    let now = OffsetDateTime::now_utc();
    let ecdsa = request(KeyAlgorithm::EcdsaP256);
    c.bench_function("certs/generate CA + serving (ECDSA P-256)", |b| {
        b.iter(|| black_box(generate_bundle(&ecdsa, &policy, now).unwrap()))
    });

    let rsa = request(KeyAlgorithm::Rsa2048);
    let mut group = c.benchmark_group("certs");
    group.sample_size(10);
    group.bench_function("generate CA + serving (RSA-2048)", |b| {
        b.iter(|| black_box(generate_bundle(&rsa, &policy, now).unwrap()))
    });
    group.finish();

    let bundles = [
        generate_bundle(&ecdsa, &policy, now).unwrap(),
        generate_bundle(&ecdsa, &policy, now).unwrap(),
    ];
    let resolver = CertResolver::new();
    let mut i = 0;
    c.bench_function("certs/swap serving certificate in resolver", |b| {
        b.iter(|| {
            i ^= 1;
            black_box(resolver.update(&bundles[i]).unwrap())
        })
    });
}

criterion_group!(benches, generation);
criterion_main!(benches);
