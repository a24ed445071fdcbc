//! Argon2id password hashing on a fixed pool of hashing threads.
//!
//! Hashing is deliberately slow, so it never runs on the async runtime's
//! worker threads: a burst of sign-ins would otherwise stall every other
//! request. Each pool thread takes the next job from a shared queue as soon
//! as it finishes one, so a busy pool hashes back to back. It does not wait
//! for the runtime to hand it the next job. Each thread also keeps its own
//! Argon2 memory from one verification to the next.
//!
//! The queue has room for one job per thread. Further callers wait outside
//! it, so a caller that times out or disconnects leaves no work behind.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use anyhow::Context;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use crate::config::PasswordConfig;

pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_CHARS: usize = 256;

/// Builds Argon2id parameters from the configuration.
pub fn argon2_params(config: &PasswordConfig) -> anyhow::Result<Params> {
    Params::new(
        config.memory_kib,
        config.iterations,
        config.parallelism,
        None,
    )
    .map_err(|error| anyhow::anyhow!("{error}"))
}

/// Work for a hashing thread, given that thread's Argon2 memory. Reusing
/// the memory matters: allocating it afresh (19 MiB by default) made the
/// kernel fault in every page again, which added about a third to a
/// login's CPU time in benches/password_login.rs.
type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

#[derive(Clone)]
pub struct PasswordHasher {
    argon2: Argon2<'static>,
    jobs: flume::Sender<Job>,
    /// Hash of a random password, verified when no user matches the typed
    /// identifier so that unknown users cost the same time as known ones.
    dummy_hash: Arc<str>,
}

impl PasswordHasher {
    pub fn new(config: &PasswordConfig) -> anyhow::Result<Self> {
        let params = argon2_params(config)?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let workers = match config.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let random_password: String = SaltString::generate(&mut OsRng).as_str().to_owned();
        let dummy_hash = argon2
            .hash_password(
                random_password.as_bytes(),
                &SaltString::generate(&mut OsRng),
            )
            .map_err(|error| anyhow::anyhow!("argon2 self-test failed: {error}"))?
            .to_string();
        let (jobs, queue) = flume::bounded::<Job>(workers);
        for number in 0..workers {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{number}"))
                .spawn(move || {
                    let mut memory = Vec::new();
                    // The queue closes when the last hasher is dropped.
                    while let Ok(job) = queue.recv() {
                        // A panicking job drops its reply, which its caller
                        // reports; the thread goes on with the next job.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut memory)));
                    }
                })
                .context("cannot start a password hashing thread")?;
        }
        Ok(Self {
            argon2,
            jobs,
            dummy_hash: dummy_hash.into(),
        })
    }

    /// Hashes `password` into a PHC string with a fresh salt.
    pub async fn hash(&self, password: SecretString) -> anyhow::Result<String> {
        let argon2 = self.argon2.clone();
        self.run(move |_memory| {
            let salt = SaltString::generate(&mut OsRng);
            argon2
                .hash_password(password.expose_secret().as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|error| anyhow::anyhow!("password hashing failed: {error}"))
        })
        .await?
    }

    /// Verifies `password` against `stored_hash`, or against a dummy hash when
    /// there is none, so the time taken does not tell whether the user exists.
    /// An unparsable stored hash counts as a mismatch.
    pub async fn verify(&self, password: SecretString, stored_hash: Option<String>) -> bool {
        let has_hash = stored_hash.is_some();
        let hash = stored_hash.unwrap_or_else(|| self.dummy_hash.to_string());
        let matched = self
            .run(move |memory| {
                let Ok(parsed) = PasswordHash::new(&hash) else {
                    tracing::error!("stored password hash is not a valid PHC string");
                    return false;
                };
                verify_with_memory(password.expose_secret().as_bytes(), &parsed, memory)
            })
            .await
            .unwrap_or(false);
        has_hash && matched
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let (reply, result) = tokio::sync::oneshot::channel();
        self.jobs
            .send_async(Box::new(move |memory| {
                // Skip the hash when the request timed out or its client
                // disconnected, because an overloaded pool would otherwise
                // compute results that no one receives.
                if !reply.is_closed() {
                    let _ = reply.send(work(memory));
                }
            }))
            .await
            .ok()
            .context("password pool closed")?;
        result.await.context("password worker panicked")
    }
}

/// Verifies `password` against the PHC string `hash` with the algorithm,
/// version and parameters that the hash names, as `verify_password` of the
/// argon2 crate does, but computes in `memory`, which grows as needed.
fn verify_with_memory(password: &[u8], hash: &PasswordHash<'_>, memory: &mut Vec<Block>) -> bool {
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(hash.algorithm) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from).transpose() {
        Ok(version) => version.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(hash) else {
        return false;
    };
    // The salt is hashed as its decoded bytes, as the argon2 crate does.
    let mut salt_buffer = [0_u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buffer) else {
        return false;
    };

    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let mut output = vec![0_u8; expected.len()];
    let argon2 = Argon2::new(algorithm, version, params);
    if argon2
        .hash_password_into_with_memory(password, salt, &mut output, &mut memory[..blocks])
        .is_err()
    {
        return false;
    }
    output.ct_eq(expected.as_bytes()).into()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordPolicyError {
    #[error("the password is empty: enter a password")]
    Empty,
    #[error("the password is shorter than {MIN_PASSWORD_CHARS} characters: choose a longer one")]
    TooShort,
    #[error("the password is longer than {MAX_PASSWORD_CHARS} characters: choose a shorter one")]
    TooLong,
    #[error("the password is too easy to guess{0}: use a longer passphrase of unrelated words")]
    TooWeak(String),
}

/// Checks a new password against the length limits and a zxcvbn strength
/// score of at least 3 ("safely unguessable"). `user_inputs` are the user's
/// own names and identifiers, which make a password easier to guess.
pub fn check_strength(password: &str, user_inputs: &[&str]) -> Result<(), PasswordPolicyError> {
    let chars = password.chars().count();
    if chars == 0 {
        return Err(PasswordPolicyError::Empty);
    }
    if chars < MIN_PASSWORD_CHARS {
        return Err(PasswordPolicyError::TooShort);
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(PasswordPolicyError::TooLong);
    }
    let estimate = zxcvbn::zxcvbn(password, user_inputs);
    if u8::from(estimate.score()) < 3 {
        let reason = estimate
            .feedback()
            .and_then(|feedback| feedback.warning())
            .map(|warning| {
                format!(
                    " ({})",
                    warning.to_string().trim_end_matches('.').to_lowercase()
                )
            })
            .unwrap_or_default();
        return Err(PasswordPolicyError::TooWeak(reason));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast_config() -> PasswordConfig {
        PasswordConfig {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
            workers: 1,
        }
    }

    #[tokio::test]
    async fn abandoned_and_panicking_jobs() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let hasher = PasswordHasher::new(&fast_config()).unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        let (release, gate) = std::sync::mpsc::channel::<()>();

        // The only worker waits on the gate while a second job queues up
        // behind it and its caller goes away.
        let first = {
            let (hasher, ran) = (hasher.clone(), ran.clone());
            tokio::spawn(async move {
                hasher
                    .run(move |_| {
                        gate.recv().unwrap();
                        ran.fetch_add(1, Ordering::SeqCst);
                    })
                    .await
            })
        };
        let abandoned = {
            let (hasher, ran) = (hasher.clone(), ran.clone());
            tokio::spawn(async move {
                hasher
                    .run(move |_| {
                        ran.fetch_add(1, Ordering::SeqCst);
                    })
                    .await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        abandoned.abort();
        let _ = abandoned.await;
        release.send(()).unwrap();
        first.await.unwrap().unwrap();

        let within = std::time::Duration::from_secs(10);
        let panicked = tokio::time::timeout(within, hasher.run(|_| panic!("job failure")))
            .await
            .expect("a panicking job gets an answer");
        assert!(panicked.is_err());
        let counted = ran.clone();
        tokio::time::timeout(
            within,
            hasher.run(move |_| {
                counted.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .await
        .expect("the pool still runs jobs after a panic")
        .unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 2, "the abandoned job ran");
    }

    #[tokio::test]
    async fn callers_wait_outside_full_queue() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let hasher = PasswordHasher::new(&fast_config()).unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let blocker = {
            let hasher = hasher.clone();
            tokio::spawn(async move { hasher.run(move |_| gate.recv().unwrap()).await })
        };

        // With the only worker busy, one job fits the queue and the other
        // callers wait to enter it. Then all of them give up.
        let mut waiting = Vec::new();
        for _ in 0..5 {
            let (hasher, ran) = (hasher.clone(), ran.clone());
            waiting.push(tokio::spawn(async move {
                hasher
                    .run(move |_| {
                        ran.fetch_add(1, Ordering::SeqCst);
                    })
                    .await
            }));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(hasher.jobs.len(), 1, "jobs queued beyond one per worker");

        for caller in &waiting {
            caller.abort();
        }
        for caller in waiting {
            let _ = caller.await;
        }
        release.send(()).unwrap();
        blocker.await.unwrap().unwrap();

        let counted = ran.clone();
        hasher
            .run(move |_| {
                counted.fetch_add(1, Ordering::SeqCst);
            })
            .await
            .unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 1, "an abandoned job ran");
    }

    #[tokio::test]
    async fn hash_then_verify() {
        let hasher = PasswordHasher::new(&fast_config()).unwrap();
        let hash = hasher.hash("lantern-orbit-57-cobalt".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{hash}");
        assert!(
            hasher
                .verify("lantern-orbit-57-cobalt".into(), Some(hash.clone()))
                .await
        );
        assert!(
            !hasher
                .verify("lantern-orbit-57-cobalT".into(), Some(hash))
                .await
        );
    }

    #[tokio::test]
    async fn verify_follows_stored_parameters() {
        // Hashes made with other parameters, such as before a change of the
        // config, still verify, and memory reused across sizes stays correct.
        let hasher = PasswordHasher::new(&fast_config()).unwrap();
        let salt = SaltString::from_b64("c2FsdHNhbHRzYWx0c2FsdA").unwrap();
        for (memory_kib, iterations, algorithm) in [
            (2048, 1, Algorithm::Argon2id),
            (512, 3, Algorithm::Argon2id),
            (1024, 2, Algorithm::Argon2i),
        ] {
            let params = Params::new(memory_kib, iterations, 1, None).unwrap();
            let hash = Argon2::new(algorithm, Version::V0x13, params)
                .hash_password(b"lantern-orbit-57-cobalt", &salt)
                .unwrap()
                .to_string();
            assert!(
                hasher
                    .verify("lantern-orbit-57-cobalt".into(), Some(hash.clone()))
                    .await,
                "{hash}"
            );
            assert!(
                !hasher
                    .verify("lantern-orbit-57-cobalT".into(), Some(hash.clone()))
                    .await,
                "{hash}"
            );
        }
    }

    #[tokio::test]
    async fn verify_without_hash_fails() {
        let hasher = PasswordHasher::new(&fast_config()).unwrap();
        assert!(!hasher.verify("anything at all".into(), None).await);
        assert!(
            !hasher
                .verify("x".into(), Some("not a phc string".into()))
                .await
        );
    }

    #[test]
    fn default_parameters_meet_owasp_minimum() {
        let params = argon2_params(&PasswordConfig::default()).unwrap();
        assert!(params.m_cost() >= 19 * 1024);
        assert!(params.t_cost() >= 2);
    }

    #[test]
    fn strength_rejects_weak_passwords() {
        assert_eq!(check_strength("", &[]), Err(PasswordPolicyError::Empty));
        assert_eq!(
            check_strength("Ab1!", &[]),
            Err(PasswordPolicyError::TooShort)
        );
        assert!(matches!(
            check_strength("password123", &[]),
            Err(PasswordPolicyError::TooWeak(_))
        ));
        assert!(matches!(
            check_strength("janedoe2024", &["jane", "doe", "janedoe"]),
            Err(PasswordPolicyError::TooWeak(_))
        ));
        assert_eq!(
            check_strength(&"x".repeat(300), &[]),
            Err(PasswordPolicyError::TooLong)
        );
    }

    #[test]
    fn strength_accepts_passphrase() {
        assert_eq!(check_strength("lantern-orbit-57-cobalt", &["jane"]), Ok(()));
    }
}
