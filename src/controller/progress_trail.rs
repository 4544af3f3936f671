//! When an image in flight will be done, from every progress ECS showed for it.
//!
//! ECS shows a copy's progress in whole percents, rising about evenly from when the copy begins
//! (which may be after the CopyImage call: a copy can wait in the region's queue). One reading
//! says little: 99% of a ten-minute copy may be anywhere in its last six seconds. Readings taken
//! over time say much more: each `p%` seen at `t` says the copy's start `s` and length `d`
//! satisfy `s + p·d/100 ≤ t < s + (p+1)·d/100`. Together with `s ≥ 0` (it cannot begin before
//! the call) these bound `d` from above and below; the latest end they allow, `s + d`, is when
//! the image is surely done — never before it. Readings that contradict an even rise give no
//! estimate, and the caller falls back to the one-reading bound.
//!
//! Times are seconds after the work started (the caller's clock).

/// The first and the last reading of one percent.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Seen {
    percent: u8,
    /// When a listing first showed it, taken as the listing's answer (no earlier than the
    /// reading): the percent was reached by then.
    first: f64,
    /// When a listing last showed it, taken as the listing's request (no later than the
    /// reading): the next percent was not reached before then.
    last: f64,
}

/// The readings of one image in flight, by percent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProgressTrail {
    /// Ordered by percent; at most [`KEPT`].
    seen: Vec<Seen>,
}

/// Readings kept per image. The earliest reading fixes the rate best over a long copy and the
/// latest ones fix where in its percent the copy is, so the second oldest goes first.
const KEPT: usize = 16;

impl ProgressTrail {
    /// A listing requested at `asked` and answered at `answered` showed `percent`.
    pub fn record(&mut self, percent: u8, asked: f64, answered: f64) {
        // 0% may be shown before the copy truly begins (while ECS prepares it): it says only
        // that 1% was not reached yet.
        let answered = if percent == 0 {
            f64::INFINITY
        } else {
            answered
        };
        match self.seen.binary_search_by_key(&percent, |s| s.percent) {
            Ok(i) => {
                let seen = &mut self.seen[i];
                seen.first = seen.first.min(answered);
                seen.last = seen.last.max(asked);
            }
            Err(i) => {
                self.seen.insert(
                    i,
                    Seen {
                        percent,
                        first: answered,
                        last: asked,
                    },
                );
                if self.seen.len() > KEPT {
                    self.seen.remove(1);
                }
            }
        }
    }

    /// The latest moment the work can end if its progress rises evenly, or `None` when the
    /// readings show no rate yet (nothing past 0%) or contradict an even rise.
    pub fn latest_end(&self) -> Option<f64> {
        let longest = self.longest()?;
        // A percent shown before the work started (clocks apart) contradicts the model too.
        if longest <= 0.0 || longest < self.shortest() {
            return None;
        }
        // The end is `s + d` with `s ≤ first − p·d/100` for every reading: the least of those
        // bounds at the longest `d` the readings allow.
        self.seen
            .iter()
            .map(|s| s.first + f64::from(100 - s.percent) * longest / 100.0)
            .reduce(f64::min)
    }

    /// The longest copy the readings allow: reaching `p%` by `first` after a start at or after 0
    /// bounds it, and so does rising from `q%` (still shown at `last`) to `p%` (shown by `first`).
    fn longest(&self) -> Option<f64> {
        let from_start = self
            .seen
            .iter()
            .filter(|s| s.percent > 0)
            .map(|s| 100.0 * s.first / f64::from(s.percent));
        let between = self.pairs().filter_map(|(lower, higher)| {
            let whole_percents = higher.percent.checked_sub(lower.percent + 1)?;
            (whole_percents > 0)
                .then(|| 100.0 * (higher.first - lower.last) / f64::from(whole_percents))
        });
        from_start.chain(between).reduce(f64::min)
    }

    /// The shortest copy the readings allow: `q%` still shown at `last` after `p%` (p ≤ q) was
    /// first shown at `first` means fewer than `q + 1 − p` percents took that long.
    fn shortest(&self) -> f64 {
        self.pairs()
            .chain(self.seen.iter().map(|s| (s, s)))
            .map(|(lower, higher)| {
                let percents = f64::from(higher.percent + 1 - lower.percent);
                100.0 * (higher.last - lower.first) / percents
            })
            .fold(0.0, f64::max)
    }

    /// Every two readings of different percents, lower first.
    fn pairs(&self) -> impl Iterator<Item = (&Seen, &Seen)> {
        self.seen
            .iter()
            .enumerate()
            .flat_map(|(i, lower)| self.seen[i + 1..].iter().map(move |higher| (lower, higher)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A copy that begins `start` s after the call and takes `length` s, read by listings at
    /// `times` (each answered 0.2 s after it was asked); the percent shown, as ECS floors it.
    fn read(start: f64, length: f64, times: &[f64]) -> ProgressTrail {
        let mut trail = ProgressTrail::default();
        for &t in times {
            let percent = (((t - start) / length) * 100.0).floor().clamp(0.0, 99.0) as u8;
            trail.record(percent, t, t + 0.2);
        }
        trail
    }

    #[test]
    fn one_reading_bounds_the_end_as_the_percent_alone_allows() {
        let trail = read(0.0, 600.0, &[597.0]);
        let end = trail.latest_end().unwrap();
        assert!(
            (end - 597.2 * 100.0 / 99.0).abs() < 1e-6,
            "99% at 597.2 s: up to 1/99 of the elapsed time is left: {end}"
        );
    }

    #[test]
    fn readings_over_a_long_copy_put_its_end_within_a_second_never_before_it() {
        // A ten-minute copy, read as the poller reads it: a quarter of the way to the end at
        // first, every 10 s near the end.
        let times = [
            30.0, 170.0, 300.0, 410.0, 500.0, 540.0, 560.0, 575.0, 585.0, 595.0,
        ];
        let trail = read(0.0, 600.0, &times);
        let end = trail.latest_end().unwrap();
        assert!(end >= 600.0, "never before the copy ends: {end}");
        assert!(end - 600.0 < 1.0, "within a second of its end: {end}");
    }

    #[test]
    fn a_copy_that_waited_in_the_queue_before_it_began_is_not_taken_for_a_slow_one() {
        // Called at 0, begun at 120 (queued), 300 s long: ends at 420.
        let times = [150.0, 220.0, 300.0, 350.0, 380.0, 400.0, 410.0];
        let trail = read(120.0, 300.0, &times);
        let end = trail.latest_end().unwrap();
        assert!(end >= 420.0 && end - 420.0 < 2.0, "{end}");
    }

    #[test]
    fn no_estimate_without_a_rate_or_against_an_even_rise() {
        assert_eq!(read(0.0, 600.0, &[1.0, 3.0]).latest_end(), None, "0% only");
        assert_eq!(ProgressTrail::default().latest_end(), None);
        let mut jumped = ProgressTrail::default();
        jumped.record(10, 100.0, 100.2);
        jumped.record(11, 110.0, 110.2);
        jumped.record(90, 120.0, 120.2);
        assert_eq!(
            jumped.latest_end(),
            None,
            "80 percents in 10 s after 10 in 100 s"
        );
        let mut early = ProgressTrail::default();
        early.record(5, -3.0, -2.8);
        assert_eq!(early.latest_end(), None, "5% before the work started");
    }

    #[test]
    fn the_trail_keeps_its_first_and_latest_readings() {
        let times: Vec<f64> = (1..=40).map(|i| f64::from(i) * 14.0).collect();
        let trail = read(0.0, 600.0, &times);
        assert_eq!(trail.seen.len(), KEPT);
        assert_eq!(trail.seen[0].percent, 2, "14 s of 600");
        assert_eq!(trail.seen[KEPT - 1].percent, 93, "560 s of 600");
        let end = trail.latest_end().unwrap();
        assert!((600.0..601.0).contains(&end), "{end}");
    }

    #[test]
    fn over_many_copies_the_estimate_is_never_early_and_mostly_within_a_second() {
        // Copies of 2 to 20 minutes, begun up to a minute after the call (showing 0% until
        // then), each alone in its region and read at the poller's cadence: a quarter of the
        // estimated time left, 10 s to 60 s apart, then at the estimate itself until the copy is
        // seen done. (Beside other copies a region is listed more often, which only adds
        // readings.) The one-reading bound would be up to a percent late: 1.2 s to 12 s here.
        let mut seed = 0x2545_f491_u64;
        let mut random = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % 10_000) as f64 / 10_000.0
        };
        let mut lags = Vec::new();
        for _ in 0..300 {
            let (start, length) = (60.0 * random(), 120.0 + 1080.0 * random());
            let end = start + length;
            let mut trail = ProgressTrail::default();
            let mut t = 5.0 * random();
            let seen_done = loop {
                if t >= end {
                    break t;
                }
                let percent = (((t - start).max(0.0) / length) * 100.0).floor() as u8;
                trail.record(percent.min(99), t, t + 0.2);
                let estimate = trail.latest_end();
                if let Some(estimate) = estimate {
                    assert!(estimate >= end, "early: {estimate} < {end}");
                }
                let left = estimate.map_or(10.0, |e| e - t);
                let progress_every = (left / 4.0).clamp(10.0, 60.0);
                t += left.min(progress_every).max(1.0);
            };
            lags.push(seen_done - end);
        }
        lags.sort_by(f64::total_cmp);
        let (median, p99) = (lags[lags.len() / 2], lags[lags.len() * 99 / 100]);
        assert!(median < 1.0 && p99 < 5.0, "median {median} s, p99 {p99} s");
    }
}
