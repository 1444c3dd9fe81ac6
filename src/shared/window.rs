//! Counts over a sliding window: a ring of slots, one per unit of time
//! (a second, or a longer width the caller chooses), each reused when its
//! unit comes round again. The retry budget, the circuit breaker and the
//! canary's comparison count with it.

/// `N` slots of `T`, each stamped with the unit it counts.
#[derive(Clone)]
pub(crate) struct Window<T, const N: usize> {
    slots: [(u64, T); N],
}

impl<T: Default, const N: usize> Default for Window<T, N> {
    fn default() -> Self {
        Self { slots: std::array::from_fn(|_| (u64::MAX, T::default())) }
    }
}

impl<T: Default, const N: usize> Window<T, N> {
    /// The slot of `unit`, emptied first if it last counted another unit.
    pub(crate) fn slot(&mut self, unit: u64) -> &mut T {
        let (stamp, counts) = &mut self.slots[(unit % N as u64) as usize];
        if *stamp != unit {
            *stamp = unit;
            *counts = T::default();
        }
        counts
    }

    /// The slots of the `span` units up to and including `now` (at most `N`).
    pub(crate) fn live(&self, now: u64, span: u64) -> impl Iterator<Item = &T> {
        let span = span.clamp(1, N as u64);
        self.slots.iter().filter(move |(unit, _)| *unit <= now && unit + span > now).map(|(_, t)| t)
    }
}

#[cfg(test)]
mod tests {
    use super::Window;

    #[test]
    fn slots_count_their_unit_and_leave_the_window_in_time() {
        let mut w: Window<u32, 4> = Window::default();
        *w.slot(10) += 2;
        *w.slot(11) += 3;
        assert_eq!(w.live(11, 4).sum::<u32>(), 5);
        assert_eq!(w.live(11, 1).sum::<u32>(), 3, "a shorter span");
        assert_eq!(w.live(13, 4).sum::<u32>(), 5, "still inside 4 units");
        assert_eq!(w.live(14, 4).sum::<u32>(), 3, "unit 10 left");
        *w.slot(14) += 1; // reuses unit 10's slot
        assert_eq!(w.live(14, 4).sum::<u32>(), 4);
        assert_eq!(w.live(9, 4).sum::<u32>(), 0, "nothing from the future");
    }
}
