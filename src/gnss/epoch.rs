//! Epoch assembly: the sentences that share one UTC time become one [`Epoch`], what the
//! receiver said about that instant, sentence by sentence, before any judgement.
//!
//! Validation (`crate::validate`) turns an `Epoch` into a `Fix` or a `Rejection`; this module
//! never judges, it only groups. An epoch is emitted once, when a sentence of a later time
//! arrives (or the input ends), never mixed with the next one.

use chrono::NaiveDate;

// The observation types live in `observation`; they are re-exported here because an
// [`Epoch`] is made of them.
pub use super::observation::{
    FaaMode, GgaObs, GllObs, GnsObs, GnssSystem, GsaObs, RmcObs, UsedSats, VtgObs,
};

/// What the sentences of one UTC time said. Plain data, `Copy`, no heap.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Epoch {
    /// UTC time of day shared by the epoch's sentences, milliseconds since midnight.
    pub time_of_day_ms: Option<u32>,
    /// UTC date, from this epoch's RMC or ZDA, or carried from an earlier epoch (rolled over
    /// at midnight). `date_from_epoch` says which.
    pub date: Option<NaiveDate>,
    /// True when `date` came from a sentence of this epoch, false when carried forward.
    pub date_from_epoch: bool,
    pub rmc: Option<RmcObs>,
    pub gga: Option<GgaObs>,
    pub gns: Option<GnsObs>,
    pub gll: Option<GllObs>,
    pub gsa: Option<GsaObs>,
    pub vtg: Option<VtgObs>,
    /// Sentences that belonged here by order but were dropped (bad checksum and the like).
    pub dropped_sentences: u16,
}

use super::sentence::Observation;

/// Milliseconds in a day.
const DAY_MS: u32 = 86_400_000;

/// How far the time of day must fall back, from one epoch to the next, to be read as a
/// midnight wrap (23:59:59 -> 00:00:00) rather than a receiver stepping back a little: half
/// a day. A log that resumes hours earlier on the same day is rare; one crossing midnight
/// is every night.
const WRAP_THRESHOLD_MS: u32 = DAY_MS / 2;

/// Which slot of an [`Epoch`] an observation fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Rmc,
    Gga,
    Gns,
    Gll,
    Gsa,
    Vtg,
    Zda,
}

/// Groups observations into epochs.
///
/// The rule, chosen from the real logs in `../shared/nmea-corpus`:
/// - A timed sentence (RMC, GGA, GNS, GLL, ZDA with a time) belongs to the epoch of that
///   time. If the epoch being assembled has another time, that epoch is complete: it is
///   emitted and a new one begins. If it has no time yet (only untimed sentences so far), it
///   takes this time, unless it already holds a sentence of the same type (then the
///   untimed ones were a cycle of their own, e.g. a receiver without a fix).
/// - An untimed sentence (GSA, VTG, GLL/GGA/RMC with an empty time) attaches to the epoch
///   being assembled, unless that epoch already has one of its type: then it starts the next
///   epoch. Consecutive GSAs (one per constellation) count as one; a GSA after other
///   sentences, when the epoch already has GSAs, starts the next epoch. This is what makes
///   receivers that send GSA/VTG *before* the timed sentences of their cycle (Quectel
///   LC79D: GSA x6, VTG, RMC, GGA, GLL) come out right, as well as those that send them
///   after (u-blox: RMC, VTG, GGA, GSA...). Only the first epoch of a stream that starts
///   mid-cycle may get its neighbour's GSA/VTG.
/// - Within one epoch, the first sentence of a type wins; a repeat with the same time and the
///   same position (a second talker of one solution) or none is ignored, not mixed in. A
///   repeat with the same time and another position is a second solution for that instant
///   (a receiver that repeated its time while moving on, two receivers on one line): it
///   starts an epoch of its own, never silently dropped, and validation says what it is.
///   A cycle sent twice keeps its GSA and VTG with it. A sentence without time or position
///   (the tail of a cut no-fix cycle) gives way to one of the epoch's time.
/// - The date comes from the epoch's own RMC or ZDA (ZDA preferred: four-digit year). An
///   epoch without one carries the date of the last dated epoch, rolled to the next day when
///   its time of day fell back by more than half a day (midnight), with `date_from_epoch`
///   false.
///
/// An epoch is emitted exactly once, when the next one begins or at [`Assembler::finish`];
/// one holding no observation at all (only dropped sentences) is not emitted.
#[derive(Debug, Default)]
pub struct Assembler {
    current: Epoch,
    /// Any observation in `current`.
    has_observations: bool,
    /// `current` has a ZDA (which has no slot of its own in [`Epoch`]).
    has_zda: bool,
    /// The slot the last observation filled, to tell a run of GSAs from a new one.
    last_slot: Option<Slot>,
    /// A timed sentence of `current`'s time and position came again: the receiver sent
    /// the cycle twice (or a second talker repeats it). The repeat's untimed GSA and VTG
    /// belong to it too and are dropped with it, instead of starting an epoch of their own
    /// that would shift every later epoch's GSA and VTG by one.
    repeating: bool,
    /// Slots of `current` filled by a sentence without a time (bit `Slot as u8`).
    untimed: u8,
    /// Date and time of day of the last emitted epoch that had both: the anchor for
    /// carrying the date forward.
    anchor: Option<(NaiveDate, u32)>,
}

impl Assembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add one observation; `emit` receives the previous epoch if this one completed it.
    pub fn push(&mut self, observation: Observation, emit: &mut impl FnMut(Epoch)) {
        let slot = slot_of(&observation);
        let occupied = self.is_occupied(slot);
        let same_time = matches!(
            (observation.time_of_day_ms(), self.current.time_of_day_ms),
            (Some(t), Some(current)) if t == current
        );
        // A sentence of this epoch's time takes the place of one of its type that had no
        // time and no position: a leftover of a cut no-fix cycle (a capture restarted
        // mid-cycle), which would otherwise speak for this epoch's status.
        let replaces = occupied && same_time && self.holds_nothing(slot);
        let starts_next = match (observation.time_of_day_ms(), self.current.time_of_day_ms) {
            // Same time and type with another position: a second solution for one instant
            // (a receiver repeating its time, a second receiver on the line). It becomes an
            // epoch of its own, which validation judges (`duplicate_time`, `disagree`).
            (Some(t), Some(current)) => {
                t != current || (occupied && !replaces && self.another_position(&observation))
            }
            // An untimed sentence of a cycle sent twice stays with it (see `repeating`).
            _ if self.repeating => false,
            _ if slot == Slot::Gsa => occupied && self.last_slot != Some(Slot::Gsa),
            _ => occupied,
        };
        if starts_next {
            self.close(emit);
        } else if occupied && slot != Slot::Gsa && !replaces {
            // Same epoch, same type again (a second talker of one solution, or the cycle
            // sent twice): first one wins.
            if observation.time_of_day_ms().is_some() {
                self.repeating = true;
            }
            self.last_slot = Some(slot);
            return;
        }
        if let (Some(t), None) = (observation.time_of_day_ms(), self.current.time_of_day_ms) {
            self.current.time_of_day_ms = Some(t);
        }
        let bit = 1u8 << slot as u8;
        if observation.time_of_day_ms().is_some() {
            self.untimed &= !bit;
        } else {
            self.untimed |= bit;
        }
        self.fill(observation);
        self.has_observations = true;
        self.last_slot = Some(slot);
    }

    /// A sentence was dropped (bad checksum and the like) while this epoch was assembled.
    pub fn note_dropped(&mut self) {
        self.current.dropped_sentences = self.current.dropped_sentences.saturating_add(1);
    }

    /// End of input: emit the epoch being assembled, if it holds anything.
    pub fn finish(&mut self, emit: &mut impl FnMut(Epoch)) {
        self.close(emit);
    }

    /// `slot` holds a sentence that had no time and no position.
    fn holds_nothing(&self, slot: Slot) -> bool {
        let e = &self.current;
        let no_position = match slot {
            Slot::Rmc => e.rmc.is_some_and(|o| o.lat.is_none() || o.lon.is_none()),
            Slot::Gga => e.gga.is_some_and(|o| o.lat.is_none() || o.lon.is_none()),
            Slot::Gns => e.gns.is_some_and(|o| o.lat.is_none() || o.lon.is_none()),
            Slot::Gll => e.gll.is_some_and(|o| o.lat.is_none() || o.lon.is_none()),
            _ => false,
        };
        no_position && self.untimed & (1u8 << slot as u8) != 0
    }

    /// `observation` gives a position, and not the one its slot already holds.
    fn another_position(&self, observation: &Observation) -> bool {
        let e = &self.current;
        let both = |lat: Option<f64>, lon: Option<f64>| lat.zip(lon);
        let (new, held) = match observation {
            Observation::Rmc { obs, .. } => (
                both(obs.lat, obs.lon),
                e.rmc.and_then(|o| both(o.lat, o.lon)),
            ),
            Observation::Gga { obs, .. } => (
                both(obs.lat, obs.lon),
                e.gga.and_then(|o| both(o.lat, o.lon)),
            ),
            Observation::Gns { obs, .. } => (
                both(obs.lat, obs.lon),
                e.gns.and_then(|o| both(o.lat, o.lon)),
            ),
            Observation::Gll { obs, .. } => (
                both(obs.lat, obs.lon),
                e.gll.and_then(|o| both(o.lat, o.lon)),
            ),
            _ => (None, None),
        };
        match (new, held) {
            (Some(n), Some(h)) => n != h,
            (Some(_), None) => true,
            _ => false,
        }
    }

    fn is_occupied(&self, slot: Slot) -> bool {
        let e = &self.current;
        match slot {
            Slot::Rmc => e.rmc.is_some(),
            Slot::Gga => e.gga.is_some(),
            Slot::Gns => e.gns.is_some(),
            Slot::Gll => e.gll.is_some(),
            Slot::Gsa => e.gsa.is_some(),
            Slot::Vtg => e.vtg.is_some(),
            Slot::Zda => self.has_zda,
        }
    }

    fn fill(&mut self, observation: Observation) {
        let e = &mut self.current;
        match observation {
            Observation::Rmc { date, obs, .. } => {
                e.rmc = Some(obs);
                if let (Some(d), false) = (date, e.date_from_epoch) {
                    e.date = Some(d);
                    e.date_from_epoch = true;
                }
            }
            Observation::Gga { obs, .. } => e.gga = Some(obs),
            Observation::Gns { obs, .. } => e.gns = Some(obs),
            Observation::Gll { obs, .. } => e.gll = Some(obs),
            Observation::Gsa(g) => {
                e.gsa = Some(match e.gsa {
                    None => g,
                    // One GSA per constellation: the best mode, the satellites of all (each
                    // once: some receivers repeat a constellation under two talkers),
                    // the DOPs of the first that had them (they are the same solution's).
                    Some(prev) => GsaObs {
                        fix_mode: prev.fix_mode.max(g.fix_mode),
                        hdop: prev.hdop.or(g.hdop),
                        pdop: prev.pdop.or(g.pdop),
                        vdop: prev.vdop.or(g.vdop),
                        used: {
                            let mut used = prev.used;
                            used.merge(&g.used);
                            used
                        },
                    },
                })
            }
            Observation::Vtg(v) => e.vtg = Some(v),
            Observation::Zda { date, .. } => {
                self.has_zda = true;
                // ZDA's four-digit year beats RMC's two digits.
                if let Some(d) = date {
                    e.date = Some(d);
                    e.date_from_epoch = true;
                }
            }
        }
    }

    fn close(&mut self, emit: &mut impl FnMut(Epoch)) {
        let mut epoch = core::mem::take(&mut self.current);
        let had_observations = core::mem::replace(&mut self.has_observations, false);
        self.last_slot = None;
        self.has_zda = false;
        self.repeating = false;
        self.untimed = 0;
        if !had_observations {
            // Only dropped sentences: they stay counted for the next epoch instead.
            self.current.dropped_sentences = epoch.dropped_sentences;
            return;
        }
        if epoch.date.is_none() {
            if let (Some((date, anchor_time)), Some(t)) = (self.anchor, epoch.time_of_day_ms) {
                let wrapped = anchor_time.saturating_sub(t) > WRAP_THRESHOLD_MS;
                epoch.date = if wrapped { date.succ_opt() } else { Some(date) };
                epoch.date_from_epoch = false;
            }
        }
        if let (Some(d), Some(t)) = (epoch.date, epoch.time_of_day_ms) {
            self.anchor = Some((d, t));
        }
        emit(epoch);
    }
}

fn slot_of(observation: &Observation) -> Slot {
    match observation {
        Observation::Rmc { .. } => Slot::Rmc,
        Observation::Gga { .. } => Slot::Gga,
        Observation::Gns { .. } => Slot::Gns,
        Observation::Gll { .. } => Slot::Gll,
        Observation::Gsa(_) => Slot::Gsa,
        Observation::Vtg(_) => Slot::Vtg,
        Observation::Zda { .. } => Slot::Zda,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rmc(t: u32, date: Option<NaiveDate>) -> Observation {
        Observation::Rmc {
            time_of_day_ms: Some(t),
            date,
            obs: RmcObs {
                valid: true,
                lat: Some(1.0),
                lon: Some(2.0),
                ..RmcObs::default()
            },
        }
    }

    fn gga(t: Option<u32>) -> Observation {
        Observation::Gga {
            time_of_day_ms: t,
            obs: GgaObs {
                quality: Some(1),
                ..GgaObs::default()
            },
        }
    }

    /// A GSA listing `sats` satellites; each call lists other ones.
    fn gsa(mode: u8, sats: u8) -> Observation {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT_PRN: AtomicU32 = AtomicU32::new(1);
        let first = NEXT_PRN.fetch_add(u32::from(sats), Ordering::Relaxed) % 900;
        Observation::Gsa(GsaObs {
            fix_mode: mode,
            used: UsedSats::from_prns(0, first..first + u32::from(sats)),
            hdop: Some(1.0),
            ..GsaObs::default()
        })
    }

    fn vtg(course: f64) -> Observation {
        Observation::Vtg(VtgObs {
            course_deg: Some(course),
            ..VtgObs::default()
        })
    }

    fn day(d: u32) -> Option<NaiveDate> {
        NaiveDate::from_ymd_opt(2024, 2, d)
    }

    fn assemble(observations: &[Observation]) -> Vec<Epoch> {
        let mut a = Assembler::new();
        let mut out = Vec::new();
        for o in observations {
            a.push(*o, &mut |e| out.push(e));
        }
        a.finish(&mut |e| out.push(e));
        out
    }

    #[test]
    fn sentences_of_one_time_become_one_epoch_emitted_when_the_next_time_arrives() {
        let mut a = Assembler::new();
        let mut out = Vec::new();
        a.push(rmc(1000, day(1)), &mut |e| out.push(e));
        a.push(gga(Some(1000)), &mut |e| out.push(e));
        a.push(gsa(3, 7), &mut |e| out.push(e));
        assert!(
            out.is_empty(),
            "nothing emitted before the epoch is complete"
        );
        a.push(rmc(2000, day(1)), &mut |e| out.push(e));
        assert_eq!(out.len(), 1);
        let e = out[0];
        assert_eq!(e.time_of_day_ms, Some(1000));
        assert!(e.rmc.is_some() && e.gga.is_some());
        assert_eq!(e.gsa.map(|g| g.sats_used()), Some(7));
        assert_eq!((e.date, e.date_from_epoch), (day(1), true));
    }

    #[test]
    fn no_epoch_is_emitted_twice_or_mixed_with_the_next() {
        let out = assemble(&[
            rmc(1000, day(1)),
            gga(Some(1000)),
            gga(Some(2000)),
            rmc(2000, day(1)),
        ]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].time_of_day_ms, Some(1000));
        assert_eq!(out[1].time_of_day_ms, Some(2000));
        assert!(out.iter().all(|e| e.rmc.is_some() && e.gga.is_some()));
    }

    #[test]
    fn gsa_and_vtg_sent_before_the_timed_sentences_join_their_own_cycle() {
        // Quectel LC79D order: GSA per constellation, VTG, then RMC, GGA.
        let out = assemble(&[
            gsa(3, 8),
            gsa(3, 4),
            vtg(10.0),
            rmc(1000, day(1)),
            gga(Some(1000)),
            gsa(2, 5),
            gsa(2, 1),
            vtg(20.0),
            rmc(2000, day(1)),
            gga(Some(2000)),
        ]);
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0].gsa.map(|g| (g.fix_mode, g.sats_used())),
            Some((3, 12))
        );
        assert_eq!(out[0].vtg.and_then(|v| v.course_deg), Some(10.0));
        assert_eq!(
            out[1].gsa.map(|g| (g.fix_mode, g.sats_used())),
            Some((2, 6))
        );
        assert_eq!(out[1].vtg.and_then(|v| v.course_deg), Some(20.0));
    }

    #[test]
    fn gsa_and_vtg_sent_after_the_timed_sentences_join_the_same_cycle() {
        // u-blox order: RMC, VTG, GGA, GSA per constellation.
        let out = assemble(&[
            rmc(1000, day(1)),
            vtg(10.0),
            gga(Some(1000)),
            gsa(3, 8),
            gsa(3, 3),
            rmc(2000, day(1)),
            vtg(20.0),
            gga(Some(2000)),
            gsa(3, 9),
        ]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].gsa.map(|g| g.sats_used()), Some(11));
        assert_eq!(out[0].vtg.and_then(|v| v.course_deg), Some(10.0));
        assert_eq!(out[1].gsa.map(|g| g.sats_used()), Some(9));
    }

    #[test]
    fn cycles_without_any_time_are_still_split_by_repeated_sentence_types() {
        // A receiver without a fix: GGA and RMC with empty times.
        let untimed_rmc = Observation::Rmc {
            time_of_day_ms: None,
            date: None,
            obs: RmcObs::default(),
        };
        let out = assemble(&[
            gga(None),
            gsa(1, 0),
            untimed_rmc,
            gga(None),
            gsa(1, 0),
            untimed_rmc,
        ]);
        assert_eq!(out.len(), 2);
        assert!(out
            .iter()
            .all(|e| e.time_of_day_ms.is_none() && e.gga.is_some()));
    }

    #[test]
    fn a_repeated_sentence_of_the_same_time_keeps_the_first() {
        let mut second = gga(Some(1000));
        if let Observation::Gga { obs, .. } = &mut second {
            obs.quality = Some(6);
        }
        let out = assemble(&[gga(Some(1000)), second]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].gga.and_then(|g| g.quality), Some(1));
    }

    /// RMC at time `t` and latitude `lat` (`None`: empty position).
    fn rmc_at(t: Option<u32>, lat: Option<f64>, valid: bool) -> Observation {
        Observation::Rmc {
            time_of_day_ms: t,
            date: day(1),
            obs: RmcObs {
                valid,
                lat,
                lon: lat.map(|_| 2.0),
                ..RmcObs::default()
            },
        }
    }

    #[test]
    fn the_same_time_with_another_position_is_an_epoch_of_its_own() {
        // A second receiver (or a repeated time while moving on): nothing silently dropped.
        let out = assemble(&[
            rmc_at(Some(1000), Some(1.0), true),
            gga(Some(1000)),
            rmc_at(Some(1000), Some(1.05), true),
            rmc_at(Some(2000), Some(1.0), true),
        ]);
        let times: Vec<_> = out.iter().map(|e| e.time_of_day_ms).collect();
        assert_eq!(times, [Some(1000), Some(1000), Some(2000)]);
        assert_eq!(out[1].rmc.and_then(|r| r.lat), Some(1.05));
        assert!(out[1].gga.is_none());
    }

    #[test]
    fn a_cycle_sent_twice_stays_one_epoch_and_keeps_its_gsa_and_vtg() {
        let cycle = [
            rmc_at(Some(1000), Some(1.0), true),
            gga(Some(1000)),
            gsa(3, 6),
            vtg(10.0),
        ];
        let next = [rmc_at(Some(2000), Some(1.0), true), gsa(3, 5), vtg(20.0)];
        let all: Vec<Observation> = cycle.iter().chain(&cycle).chain(&next).copied().collect();
        let out = assemble(&all);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0].vtg.and_then(|v| v.course_deg), Some(10.0));
        assert_eq!(out[1].vtg.and_then(|v| v.course_deg), Some(20.0));
        assert_eq!(out[1].gsa.map(|g| g.sats_used()), Some(5));
    }

    #[test]
    fn an_empty_untimed_sentence_gives_way_to_one_of_the_epochs_time() {
        // The tail of a cut no-fix cycle (status V, no time, no position) glued to the
        // next epoch must not speak for it once that epoch's own sentence arrives.
        let out = assemble(&[
            rmc_at(None, None, false),
            gga(Some(1000)),
            rmc_at(Some(1000), Some(1.0), true),
        ]);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].rmc.map(|r| r.valid), Some(true));
        assert_eq!(out[0].rmc.and_then(|r| r.lat), Some(1.0));
    }

    #[test]
    fn the_date_is_carried_to_epochs_without_one() {
        let out = assemble(&[rmc(1000, day(1)), gga(Some(1000)), gga(Some(2000))]);
        assert_eq!((out[1].date, out[1].date_from_epoch), (day(1), false));
    }

    #[test]
    fn a_carried_date_rolls_over_at_midnight() {
        let out = assemble(&[
            rmc(86_399_000, day(1)),
            gga(Some(86_399_500)),
            gga(Some(0)),
            gga(Some(1000)),
        ]);
        assert_eq!(out.len(), 4);
        assert_eq!(out[1].date, day(1));
        assert_eq!((out[2].date, out[2].date_from_epoch), (day(2), false));
        assert_eq!(out[3].date, day(2), "the rolled date is carried on");
        let next = assemble(&[rmc(1000, day(1)), gga(Some(500))]);
        assert_eq!(next[1].date, day(1), "a small step back is not a new day");
    }

    #[test]
    fn zda_date_is_taken_and_preferred_over_rmc() {
        let zda = Observation::Zda {
            time_of_day_ms: Some(1000),
            date: NaiveDate::from_ymd_opt(2024, 2, 9),
        };
        let out = assemble(&[zda, rmc(1000, day(1))]);
        assert_eq!((out[0].date, out[0].date_from_epoch), (day(9), true));
        assert!(out[0].rmc.is_some());
    }

    #[test]
    fn dropped_sentences_are_counted_in_the_epoch_being_assembled() {
        let mut a = Assembler::new();
        let mut out = Vec::new();
        a.push(rmc(1000, day(1)), &mut |e| out.push(e));
        a.note_dropped();
        a.note_dropped();
        a.push(rmc(2000, day(1)), &mut |e| out.push(e));
        a.finish(&mut |e| out.push(e));
        assert_eq!(out[0].dropped_sentences, 2);
        assert_eq!(out[1].dropped_sentences, 0);
    }
}
