//! Calendar-window quotas: a cap on the cost a caller may spend in a day
//! or a month, in a time zone (UTC, a fixed offset, or an IANA zone such as
//! `Europe/Berlin`, whose days are 23 or 25 hours long when the clocks
//! change). The window a moment falls in has an id (part of the store key,
//! so a new window starts from zero) and an end (when the caller's count
//! resets); the count itself is one step like GCRA's ([`decide`]), run by
//! every store. Zones come from the tz database bundled into the binary
//! (`jiff`'s copy), so every home counts the same windows.

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

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
    /// Its length in seconds (a month's varies, and so does a day's where
    /// the clocks change).
    pub length_s: u64,
}

/// The window `now_us` falls in, for a period in `zone`. A window starts
/// at the first moment of its first local day (midnight, or the end of a
/// gap that swallowed midnight).
pub fn window(now_us: u64, period: Period, zone: &TimeZone) -> Window {
    let now = Timestamp::from_microsecond(i64::try_from(now_us).unwrap_or(i64::MAX)).unwrap_or(Timestamp::MAX);
    let today = zone.to_datetime(now).date();
    let (id, first, next) = match period {
        Period::Day => {
            let id = format!("{:04}-{:02}-{:02}", today.year(), today.month(), today.day());
            (id, today, today.tomorrow())
        }
        Period::Month => {
            let id = format!("{:04}-{:02}", today.year(), today.month());
            (id, today.first_of_month(), today.last_of_month().tomorrow())
        }
    };
    let start = starts(first, zone);
    let ends = next.ok().map_or(Timestamp::MAX, |d| starts(d, zone));
    let us = |t: Timestamp| u64::try_from(t.as_microsecond()).unwrap_or(0);
    Window { id, ends_us: us(ends), length_s: u64::try_from(ends.as_second() - start.as_second()).unwrap_or(0) }
}

/// The first moment of local day `day` in `zone`.
fn starts(day: Date, zone: &TimeZone) -> Timestamp {
    day.to_zoned(zone.clone()).map_or(Timestamp::MAX, |z| z.timestamp())
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
        leased: 0,
        pooled: false,
    }
}

#[cfg(test)]
mod tests {
    use jiff::tz::{Offset, TimeZone};

    use super::*;

    const SEC: u64 = 1_000_000;
    const HOUR: u64 = 3600 * SEC;
    /// 2026-12-31T23:59:59Z
    const NEW_YEARS_EVE: u64 = 1_798_761_599 * SEC;

    fn fixed(seconds: i32) -> TimeZone {
        TimeZone::fixed(Offset::from_seconds(seconds).unwrap())
    }

    fn zone(name: &str) -> TimeZone {
        TimeZone::get(name).unwrap()
    }

    #[test]
    fn months_and_days_end_at_local_midnight() {
        let utc = TimeZone::UTC;
        let w = window(NEW_YEARS_EVE, Period::Month, &utc);
        assert_eq!(w.id, "2026-12");
        assert_eq!(w.ends_us, NEW_YEARS_EVE + SEC);
        assert_eq!(w.length_s, 31 * 86_400);
        let next = window(NEW_YEARS_EVE + SEC, Period::Month, &utc);
        assert_eq!(next.id, "2027-01");
        let day = window(NEW_YEARS_EVE, Period::Day, &utc);
        assert_eq!((day.id.as_str(), day.ends_us, day.length_s), ("2026-12-31", NEW_YEARS_EVE + SEC, 86_400));
        // One hour east of UTC, the new year began an hour earlier.
        let east = window(NEW_YEARS_EVE - HOUR + SEC, Period::Month, &fixed(3600));
        assert_eq!(east.id, "2027-01");
        assert_eq!(window(NEW_YEARS_EVE - HOUR, Period::Month, &fixed(3600)).ends_us, NEW_YEARS_EVE + SEC - HOUR);
        // February of a leap year.
        let feb = window(1_709_164_800 * SEC, Period::Month, &utc); // 2024-02-29T00:00Z
        assert_eq!((feb.id.as_str(), feb.length_s), ("2024-02", 29 * 86_400));
        let west = window(1_709_164_800 * SEC, Period::Day, &fixed(-5 * 3600));
        assert_eq!(west.id, "2024-02-28");
    }

    /// In Berlin the clocks go forward on 2026-03-29 (a 23-hour day) and
    /// back on 2026-10-25 (25 hours); the months around them are an hour
    /// shorter and longer, and each window starts at local midnight, an
    /// hour earlier in UTC in summer than in winter.
    #[test]
    fn an_iana_zone_has_days_of_23_and_25_hours() {
        let berlin = zone("Europe/Berlin");
        // 2026-03-29T12:00Z is 14:00 CEST.
        let spring = window(1_774_785_600 * SEC, Period::Day, &berlin);
        assert_eq!((spring.id.as_str(), spring.length_s), ("2026-03-29", 23 * 3600));
        assert_eq!(spring.ends_us, 1_774_821_600 * SEC, "2026-03-29T22:00Z: midnight CEST");
        let march = window(1_774_785_600 * SEC, Period::Month, &berlin);
        assert_eq!((march.id.as_str(), march.length_s), ("2026-03", 31 * 86_400 - 3600));
        // 2026-10-25T12:00Z is 13:00 CET.
        let autumn = window(1_792_929_600 * SEC, Period::Day, &berlin);
        assert_eq!((autumn.id.as_str(), autumn.length_s), ("2026-10-25", 25 * 3600));
        assert_eq!(autumn.ends_us, 1_792_969_200 * SEC, "2026-10-25T23:00Z: midnight CET");
        let october = window(1_792_929_600 * SEC, Period::Month, &berlin);
        assert_eq!((october.id.as_str(), october.length_s), ("2026-10", 31 * 86_400 + 3600));
        // 2026-06-30T22:00Z is midnight in Berlin: July has begun.
        assert_eq!(window(1_782_856_800 * SEC, Period::Month, &berlin).id, "2026-07");
        assert_eq!(window(1_782_856_800 * SEC - SEC, Period::Month, &berlin).id, "2026-06");
    }

    /// Where the clocks skip midnight itself (Santiago, 2026-09-06: 00:00
    /// becomes 01:00), the day starts at the first moment it has.
    #[test]
    fn a_day_whose_midnight_is_skipped_starts_when_it_does() {
        let santiago = zone("America/Santiago");
        // 2026-09-06T12:00Z is 09:00 -03.
        let day = window(1_788_696_000 * SEC, Period::Day, &santiago);
        assert_eq!((day.id.as_str(), day.length_s), ("2026-09-06", 23 * 3600));
        let before = window(1_788_696_000 * SEC - 86_400 * SEC, Period::Day, &santiago);
        assert_eq!((before.id.as_str(), before.length_s), ("2026-09-05", 24 * 3600));
        assert_eq!(before.ends_us, 1_788_667_200 * SEC, "2026-09-06T04:00Z: 01:00 -03, the day's first moment");
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
