//! Picking the next token from the logits: greedy at temperature 0, otherwise a draw from the
//! softmax at that temperature, optionally limited to the nucleus (`top_p`), from a generator
//! seeded by the request. The same seed, logits and parameters give the same token.
//!
//! The generator is xoshiro256** seeded through SplitMix64: statistically sound and
//! reproducible, not a secret (the seed is the client's).

/// A seeded sampler for one generation.
pub(crate) struct Sampler {
    temperature: f64,
    top_p: f64,
    state: [u64; 4],
    /// Reused between steps: the candidates' probabilities and ids.
    candidates: Vec<(f64, u32)>,
}

impl Sampler {
    pub(crate) fn new(seed: u64, temperature: f64, top_p: f64) -> Self {
        let mut s = seed;
        let mut splitmix = || {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let state = [splitmix(), splitmix(), splitmix(), splitmix()];
        Sampler {
            temperature,
            top_p,
            state,
            candidates: Vec::new(),
        }
    }

    fn next_u64(&mut self) -> u64 {
        let [a, b, c, d] = &mut self.state;
        let result = b.wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = *b << 17;
        *c ^= *a;
        *d ^= *b;
        *b ^= *c;
        *a ^= *d;
        *c ^= t;
        *d = d.rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        // The top 53 bits, exactly representable (32 high, 21 low), scaled by 2^-53.
        let x = self.next_u64();
        let high = u32::try_from(x >> 32).unwrap_or(0);
        let low = u32::try_from((x >> 11) & 0x1f_ffff).unwrap_or(0);
        (f64::from(high) * f64::from(1u32 << 21) + f64::from(low)) / 9_007_199_254_740_992.0
    }

    /// The next token. NaN logits count as impossible; `None` when no logit is a number.
    pub(crate) fn sample(&mut self, logits: &[f32]) -> Option<u32> {
        let max = logits
            .iter()
            .copied()
            .filter(|l| !l.is_nan())
            .fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            // Every logit NaN or -inf: no token is possible.
            return None;
        }
        if self.temperature <= 0.0 || max == f32::INFINITY {
            // The highest logit, the lowest id on a tie (an infinite one wins outright).
            return logits
                .iter()
                .position(|&l| l == max)
                .and_then(|i| u32::try_from(i).ok());
        }
        // Subtracting the largest first keeps a temperature near zero meaningful: the most
        // likely token gets exp(0) = 1 and the others underflow to 0 instead of overflowing.
        let max = f64::from(max);
        self.candidates.clear();
        for (id, &logit) in logits.iter().enumerate() {
            if logit.is_nan() {
                continue;
            }
            let p = ((f64::from(logit) - max) / self.temperature).exp();
            if p > 0.0 {
                let id = u32::try_from(id).ok()?;
                self.candidates.push((p, id));
            }
        }
        let total: f64 = self.candidates.iter().map(|c| c.0).sum();
        if self.top_p < 1.0 {
            let kept = self.nucleus(total);
            self.candidates.truncate(kept);
        }
        let kept_mass: f64 = self.candidates.iter().map(|c| c.0).sum();
        let mut target = self.unit() * kept_mass;
        for &(p, id) in &self.candidates {
            if target < p {
                return Some(id);
            }
            target -= p;
        }
        // Rounding left the draw past the last candidate.
        self.candidates.last().map(|c| c.1)
    }

    /// Sort the most likely candidates first and return how many make up the nucleus: the
    /// fewest whose probability reaches `top_p` of the whole (at least one). Only as many as
    /// needed are sorted: the 64 most likely, then each time the next ones from the unsorted
    /// rest, four times as many in all, the mass so far carried forward.
    fn nucleus(&mut self, total: f64) -> usize {
        let target = self.top_p.max(0.0) * total;
        let n = self.candidates.len();
        let by_probability =
            |a: &(f64, u32), b: &(f64, u32)| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1));
        let mut sorted = 0;
        let mut mass = 0.0;
        let mut k = n.min(64);
        loop {
            let rest = self.candidates.get_mut(sorted..).unwrap_or_default();
            let want = k.saturating_sub(sorted);
            if want < rest.len() {
                rest.select_nth_unstable_by(want, by_probability);
            }
            let next = rest.get_mut(..want).unwrap_or_default();
            next.sort_unstable_by(by_probability);
            for (i, c) in (sorted..).zip(next.iter()) {
                mass += c.0;
                if mass >= target {
                    return i + 1;
                }
            }
            if k == n {
                return n;
            }
            sorted = k;
            k = n.min(k.saturating_mul(4));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temperature_zero_is_the_highest_logit_lowest_id_on_a_tie() {
        let mut s = Sampler::new(1, 0.0, 1.0);
        assert_eq!(s.sample(&[0.0, 3.0, 1.0, 3.0]), Some(1));
        assert_eq!(s.sample(&[f32::NAN, -1.0, f32::NAN]), Some(1));
        assert_eq!(s.sample(&[f32::NAN, f32::NAN]), None);
        assert_eq!(s.sample(&[]), None);
    }

    #[test]
    fn units_cover_zero_to_one() {
        let mut s = Sampler::new(11, 1.0, 1.0);
        let draws: Vec<f64> = (0..10_000).map(|_| s.unit()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        let mean = draws.iter().sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
        assert!(draws.iter().any(|&u| u > 0.99) && draws.iter().any(|&u| u < 0.01));
    }

    #[test]
    fn the_same_seed_draws_the_same_tokens_and_others_differ() {
        let logits: Vec<f32> = (0..1000u16)
            .map(|i| f32::from((i * 37) % 101) / 20.0)
            .collect();
        let draw = |seed| {
            let mut s = Sampler::new(seed, 1.0, 1.0);
            (0..32)
                .map(|_| s.sample(&logits).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(5), draw(5));
        assert_ne!(draw(5), draw(6));
    }

    #[test]
    fn draws_follow_the_softmax() {
        // Logits ln 1, ln 2, ln 3, ln 4: probabilities 0.1 to 0.4.
        let logits = [1f32.ln(), 2f32.ln(), 3f32.ln(), 4f32.ln()];
        let mut s = Sampler::new(9, 1.0, 1.0);
        let mut counts = [0u32; 4];
        for _ in 0..40_000 {
            counts[usize::try_from(s.sample(&logits).unwrap()).unwrap()] += 1;
        }
        for (i, &c) in (1u32..).zip(&counts) {
            let expected = 4000.0 * f64::from(i);
            assert!(
                (f64::from(c) - expected).abs() < 400.0,
                "token {i}: {c}, expected about {expected}"
            );
        }
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // Probabilities 0.4, 0.3, 0.2, 0.1 (ids 3, 2, 1, 0): top_p 0.65 keeps ids 3 and 2.
        let logits = [1f32.ln(), 2f32.ln(), 3f32.ln(), 4f32.ln()];
        let mut s = Sampler::new(3, 1.0, 0.65);
        let mut seen = [false; 4];
        for _ in 0..2000 {
            seen[usize::try_from(s.sample(&logits).unwrap()).unwrap()] = true;
        }
        assert_eq!(seen, [false, false, true, true]);
        // The nucleus is the same set however far the sorting had to go: against a full sort.
        let wide: Vec<f32> = (0..5000u16).map(|i| f32::from(i % 97) / 7.0).collect();
        for top_p in [0.01, 0.3, 0.9, 0.999] {
            let mut s = Sampler::new(1, 1.0, top_p);
            let max = wide.iter().copied().fold(f32::MIN, f32::max);
            s.candidates = (0u32..)
                .zip(&wide)
                .map(|(i, &l)| ((f64::from(l) - f64::from(max)).exp(), i))
                .collect();
            let total: f64 = s.candidates.iter().map(|c| c.0).sum();
            let kept = s.nucleus(total);
            let mut full = s.candidates.clone();
            full.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            let mut mass = 0.0;
            let expected = full
                .iter()
                .position(|c| {
                    mass += c.0;
                    mass >= top_p * total
                })
                .unwrap()
                + 1;
            assert_eq!(kept, expected, "top_p {top_p}");
            assert_eq!(s.candidates[..kept], full[..kept], "top_p {top_p}");
        }
        // A nucleus larger than the first sorted prefix (64) is found whole.
        let flat = vec![0f32; 1000];
        let mut s = Sampler::new(3, 1.0, 0.9);
        let mut distinct = std::collections::BTreeSet::new();
        for _ in 0..5000 {
            distinct.insert(s.sample(&flat).unwrap());
        }
        assert!(distinct.len() > 850 && *distinct.last().unwrap() < 1000);
        // The smallest top_p keeps just the most likely token.
        let mut s = Sampler::new(3, 1.0, f64::MIN_POSITIVE);
        assert!((0..100).all(|_| s.sample(&logits) == Some(3)));
    }

    #[test]
    fn a_tiny_temperature_is_nearly_greedy_and_never_fails() {
        let mut s = Sampler::new(1, 1e-30, 1.0);
        assert_eq!(s.sample(&[0.0, 5.0, 4.999]), Some(1));
        let mut s = Sampler::new(1, 1e30, 0.5);
        assert!(s.sample(&[f32::MIN, f32::MAX, 0.0]).is_some());
        let mut s = Sampler::new(1, 2.0, 1.0);
        assert_eq!(s.sample(&[f32::NEG_INFINITY, f32::INFINITY]), Some(1));
        assert_eq!(s.sample(&[f32::NEG_INFINITY, f32::NEG_INFINITY]), None);
    }
}
