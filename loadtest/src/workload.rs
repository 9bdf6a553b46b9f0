//! What to send next: the Get/Set mix, key choice (uniform or Zipf over
//! `--keys`), key formatting to `--key-size`, and value sizes. One
//! [`Workload`] per connection, each with its own seeded RNG, so threads
//! never share state and a fixed `--seed` gives the same request stream.

use crate::cli::ValueSize;
use crate::grpc::Op;
use crate::proto;
use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

/// Picks key numbers in `0..n`.
#[derive(Debug, Clone)]
pub enum KeySampler {
    Uniform {
        n: u64,
    },
    /// Key `i` has popularity rank `i + 1`: P(i) ∝ 1 / (i + 1)^s.
    Zipf {
        n: u64,
        dist: Zipf<f64>,
    },
}

impl KeySampler {
    pub fn new(n: u64, zipf: Option<f64>) -> Result<KeySampler, String> {
        if n == 0 {
            return Err("at least one key is needed".into());
        }
        Ok(match zipf {
            None => KeySampler::Uniform { n },
            Some(s) => KeySampler::Zipf {
                n,
                dist: Zipf::new(n as f64, s).map_err(|e| format!("Zipf({n}, {s}): {e}"))?,
            },
        })
    }

    #[inline]
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        match self {
            KeySampler::Uniform { n } => rng.random_range(0..*n),
            // rand_distr samples ranks 1..=n (rejection-inversion, O(1)).
            KeySampler::Zipf { n, dist } => (dist.sample(rng) as u64).clamp(1, *n) - 1,
        }
    }
}

/// Writes key number `idx` as exactly `size` bytes: "k" and the number
/// zero-padded to `size - 1` digits. The caller checked that it fits.
pub fn format_key(idx: u64, size: usize, out: &mut String) {
    out.clear();
    out.push('k');
    let mut digits = [0u8; 20];
    let mut n = idx;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let len = digits.len() - i;
    for _ in 0..size.saturating_sub(1 + len) {
        out.push('0');
    }
    for &d in &digits[i..] {
        out.push(d as char);
    }
}

/// The bytes every value is sliced from (shared by all connections, so a
/// Set never allocates or fills a value).
pub fn value_pattern(max: usize) -> Bytes {
    Bytes::from((0..max).map(|i| b'a' + (i % 26) as u8).collect::<Vec<u8>>())
}

/// Workload settings shared by every connection.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    pub keys: KeySampler,
    pub key_count: u64,
    pub key_size: usize,
    pub get_ratio: f64,
    pub value_size: ValueSize,
    pub values: Bytes,
    pub group: String,
    pub ttl_ms: u64,
}

/// One connection's request generator. Reuses one `Request` so that
/// building a request allocates nothing.
#[derive(Debug)]
pub struct Workload {
    spec: std::sync::Arc<WorkloadSpec>,
    rng: SmallRng,
    req: proto::Request,
}

impl Workload {
    pub fn new(spec: std::sync::Arc<WorkloadSpec>, seed: u64) -> Workload {
        let req = proto::Request {
            group: spec.group.clone(),
            key: String::with_capacity(spec.key_size),
            value: Bytes::new(),
            ttl_ms: 0,
        };
        Workload {
            spec,
            rng: SmallRng::seed_from_u64(seed),
            req,
        }
    }

    /// Get with probability `get_ratio`, otherwise Set.
    #[inline]
    pub fn next_op(&mut self) -> Op {
        if self.rng.random::<f64>() < self.spec.get_ratio {
            Op::Get
        } else {
            Op::Set
        }
    }

    #[inline]
    pub fn value_size(&mut self) -> usize {
        let vs = self.spec.value_size;
        if vs.min == vs.max {
            vs.min
        } else {
            self.rng.random_range(vs.min..=vs.max)
        }
    }

    /// Fills the request for `op`: key `key` if given (preload), else a
    /// sampled one; a value for Sets.
    pub fn request(&mut self, op: Op, key: Option<u64>) -> &proto::Request {
        let idx = match key {
            Some(k) => k,
            None => self.spec.keys.sample(&mut self.rng),
        };
        format_key(idx, self.spec.key_size, &mut self.req.key);
        match op {
            Op::Get => {
                self.req.value = Bytes::new();
                self.req.ttl_ms = 0;
            }
            Op::Set | Op::Preload => {
                let len = self.value_size();
                self.req.value = self.spec.values.slice(..len);
                self.req.ttl_ms = self.spec.ttl_ms;
            }
        }
        &self.req
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn spec(value_size: ValueSize, get_ratio: f64) -> Arc<WorkloadSpec> {
        Arc::new(WorkloadSpec {
            keys: KeySampler::new(1000, None).unwrap(),
            key_count: 1000,
            key_size: 16,
            get_ratio,
            value_size,
            values: value_pattern(value_size.max),
            group: "g".into(),
            ttl_ms: 9,
        })
    }

    #[test]
    fn keys_are_padded_to_size() {
        let mut s = String::new();
        format_key(42, 16, &mut s);
        assert_eq!(s, "k000000000000042");
        format_key(0, 2, &mut s);
        assert_eq!(s, "k0");
        format_key(u64::MAX, 21, &mut s);
        assert_eq!(s, format!("k{}", u64::MAX));
        format_key(7, 30, &mut s);
        assert_eq!(s.len(), 30);
    }

    #[test]
    fn zipf_rank_ratio_and_top_mass() {
        let (n, s) = (10_000u64, 0.99f64);
        let sampler = KeySampler::new(n, Some(s)).unwrap();
        let mut rng = SmallRng::seed_from_u64(7);
        let samples = 200_000;
        let mut counts = vec![0u64; n as usize];
        for _ in 0..samples {
            counts[sampler.sample(&mut rng) as usize] += 1;
        }
        // P(rank 1) / P(rank 2) = 2^s.
        let ratio = counts[0] as f64 / counts[1] as f64;
        let expect = 2f64.powf(s);
        assert!(
            (ratio - expect).abs() / expect < 0.05,
            "ratio {ratio} vs {expect}"
        );
        // Mass of the top k ranks: H(k, s) / H(n, s).
        let h = |k: u64| (1..=k).map(|i| (i as f64).powf(-s)).sum::<f64>();
        for k in [1u64, 10, 100, 1000] {
            let theory = h(k) / h(n);
            let seen = counts[..k as usize].iter().sum::<u64>() as f64 / samples as f64;
            assert!(
                (seen - theory).abs() < 0.01,
                "top-{k} mass {seen:.4} vs theory {theory:.4}"
            );
        }
    }

    #[test]
    fn uniform_covers_all_keys_evenly() {
        let n = 1000u64;
        let sampler = KeySampler::new(n, None).unwrap();
        let mut rng = SmallRng::seed_from_u64(1);
        let mut counts = vec![0u64; n as usize];
        for _ in 0..200_000 {
            counts[sampler.sample(&mut rng) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 0), "a key was never drawn");
        // Expected 200 each; a binomial's 6-sigma band is about ±85.
        assert!(counts.iter().all(|&c| (115..=285).contains(&c)));
    }

    #[test]
    fn value_sizes_stay_in_range_and_cover_it() {
        let vs = ValueSize { min: 64, max: 128 };
        let mut w = Workload::new(spec(vs, 0.0), 3);
        let mut seen = [false; 129];
        for _ in 0..20_000 {
            let req = w.request(Op::Set, None);
            let len = req.value.len();
            assert!((64..=128).contains(&len));
            assert_eq!(req.ttl_ms, 9);
            seen[len] = true;
        }
        assert!(seen[64..=128].iter().all(|&s| s));
    }

    #[test]
    fn op_mix_follows_get_ratio() {
        let vs = ValueSize { min: 1, max: 1 };
        let mut w = Workload::new(spec(vs, 0.9), 5);
        let gets = (0..100_000).filter(|_| w.next_op() == Op::Get).count();
        assert!((89_000..91_000).contains(&gets), "{gets}");
        let mut w = Workload::new(spec(vs, 1.0), 5);
        assert!((0..10_000).all(|_| w.next_op() == Op::Get));
        let mut w = Workload::new(spec(vs, 0.0), 5);
        assert!((0..10_000).all(|_| w.next_op() == Op::Set));
    }

    #[test]
    fn gets_carry_no_value_and_preload_uses_given_key() {
        let vs = ValueSize { min: 8, max: 8 };
        let mut w = Workload::new(spec(vs, 1.0), 5);
        let r = w.request(Op::Get, None).clone();
        assert!(r.value.is_empty() && r.key.len() == 16 && r.group == "g");
        let r = w.request(Op::Preload, Some(5)).clone();
        assert_eq!(r.key, "k000000000000005");
        assert_eq!(&r.value[..], b"abcdefgh");
    }
}
