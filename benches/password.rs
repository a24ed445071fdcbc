//! Cost of one password verification with the default Argon2id parameters,
//! through the service's hashing pool and with the bare `argon2` crate as the
//! bound measured in the same run.

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Version};
use criterion::{Criterion, criterion_group, criterion_main};
use unified_login::config::PasswordConfig;
use unified_login::credentials::password::{PasswordHasher, argon2_params};

const PASSWORD: &str = "lantern-orbit-57-cobalt";

fn verification(c: &mut Criterion) {
    let config = PasswordConfig::default();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let hasher = PasswordHasher::new(&config).expect("hasher");
    let hash = runtime
        .block_on(hasher.hash(PASSWORD.into()))
        .expect("hash");

    let mut group = c.benchmark_group("password_verify");
    group.sample_size(20);
    group.bench_function("service_pool", |b| {
        b.to_async(&runtime).iter(|| async {
            assert!(hasher.verify(PASSWORD.into(), Some(hash.clone())).await);
        });
    });

    let argon2 = Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        argon2_params(&config).expect("params"),
    );
    let salt = SaltString::from_b64("c2FsdHNhbHRzYWx0c2FsdA").expect("salt");
    let raw_hash = argon2
        .hash_password(PASSWORD.as_bytes(), &salt)
        .expect("hash")
        .to_string();
    group.bench_function("bare_argon2", |b| {
        b.iter(|| {
            let parsed = PasswordHash::new(&raw_hash).expect("PHC string");
            assert!(argon2.verify_password(PASSWORD.as_bytes(), &parsed).is_ok());
        });
    });
    group.finish();
}

criterion_group!(benches, verification);
criterion_main!(benches);
