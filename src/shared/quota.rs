//! Calendar-window quotas: a cap on the cost a caller may spend in a day
//! or a month, in UTC or at a fixed offset from it. The window a moment
//! falls in has an id (part of the store key, so a new window starts from
//! zero) and an end (when the caller's count resets); the count itself is
//! one step like GCRA's ([`decide`]), run by every store.

use super::gcra::Decision;

/// A quota's calendar period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day,
    Month,
}

/// The window of a quota that a moment falls in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// `2026-12-06` (a day) or `2026-12` (a month), in the quota's local time.
    pub id: String,
    /// When it ends (the next one starts), in microseconds since the Unix epoch.
    pub ends_us: u64,
    /// Its length in seconds (a month's varies).
    pub length_s: u64,
}

const DAY_US: i64 = 86_400_000_000;

/// The window `now_us` falls in, for a period at `offset_s` seconds east of UTC.
pub fn window(now_us: u64, period: Period, offset_s: i32) -> Window {
    let local_us = i64::try_from(now_us).unwrap_or(i64::MAX) + i64::from(offset_s) * 1_000_000;
    let day = local_us.div_euclid(DAY_US);
    let (y, m, d) = civil_from_days(day);
    let (id, start_day, end_day) = match period {
        Period::Day => (format!("{y:04}-{m:02}-{d:02}"), day, day + 1),
        Period::Month => {
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            (format!("{y:04}-{m:02}"), days_from_civil(y, m, 1), days_from_civil(ny, nm, 1))
        }
    };
    let utc = |day: i64| u64::try_from(day * DAY_US - i64::from(offset_s) * 1_000_000).unwrap_or(0);
    Window { id, ends_us: utc(end_day), length_s: u64::try_from((end_day - start_day) * 86_400).unwrap_or(0) }
}

/// One quota step: `stored` is the window's count so far.
pub fn decide(stored: Option<u64>, now_us: u64, limit: u64, ends_us: u64, cost: u64) -> Decision {
    let used = stored.unwrap_or(0);
    let reset_after_us = ends_us.saturating_sub(now_us);
    let after = used.saturating_add(cost);
    let allowed = after <= limit;
    Decision {
        allowed,
        tat_us: if allowed { after } else { used },
        remaining: limit.saturating_sub(if allowed { after } else { used }),
        reset_after_us,
        retry_after_us: match allowed {
            true => None,
            false if cost > limit => None,
            false => Some(reset_after_us.max(1)),
        },
        delay_us: 0,
        keep_until_us: ends_us,
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (year, month, day) to days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000;
    /// 2026-12-31T23:59:59Z
    const NEW_YEARS_EVE: u64 = 1_798_761_599 * SEC;

    #[test]
    fn months_and_days_end_at_local_midnight() {
        let w = window(NEW_YEARS_EVE, Period::Month, 0);
        assert_eq!(w.id, "2026-12");
        assert_eq!(w.ends_us, NEW_YEARS_EVE + SEC);
        assert_eq!(w.length_s, 31 * 86_400);
        let next = window(NEW_YEARS_EVE + SEC, Period::Month, 0);
        assert_eq!(next.id, "2027-01");
        let day = window(NEW_YEARS_EVE, Period::Day, 0);
        assert_eq!((day.id.as_str(), day.ends_us, day.length_s), ("2026-12-31", NEW_YEARS_EVE + SEC, 86_400));
        // One hour east of UTC, the new year began an hour earlier.
        let east = window(NEW_YEARS_EVE - 3600 * SEC + SEC, Period::Month, 3600);
        assert_eq!(east.id, "2027-01");
        assert_eq!(window(NEW_YEARS_EVE - 3600 * SEC, Period::Month, 3600).ends_us, NEW_YEARS_EVE + SEC - 3600 * SEC);
        // February of a leap year.
        let feb = window(1_709_164_800 * SEC, Period::Month, 0); // 2024-02-29T00:00Z
        assert_eq!((feb.id.as_str(), feb.length_s), ("2024-02", 29 * 86_400));
        let west = window(1_709_164_800 * SEC, Period::Day, -5 * 3600);
        assert_eq!(west.id, "2024-02-28");
    }

    #[test]
    fn the_calendar_round_trips() {
        for day in [-800_000, -1, 0, 1, 59, 365, 11_016, 20_793, 2_932_896] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_793), (2026, 12, 6));
    }

    #[test]
    fn a_quota_counts_up_to_its_limit_and_refusals_charge_nothing() {
        let ends = NEW_YEARS_EVE + SEC;
        let first = decide(None, NEW_YEARS_EVE, 3, ends, 2);
        assert!(first.allowed);
        assert_eq!((first.tat_us, first.remaining, first.reset_after_us), (2, 1, SEC));
        let over = decide(Some(2), NEW_YEARS_EVE, 3, ends, 2);
        assert!(!over.allowed);
        assert_eq!((over.tat_us, over.remaining, over.retry_after_us), (2, 1, Some(SEC)));
        assert!(decide(Some(2), NEW_YEARS_EVE, 3, ends, 1).allowed);
        assert_eq!(decide(None, NEW_YEARS_EVE, 3, ends, 4).retry_after_us, None, "never within the limit");
    }
}
