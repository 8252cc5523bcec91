//! The slot calendar: when a resource is open and which slots can be booked.
//!
//! Opening hours and the slot grid are written in local wall-clock time
//! ("09:00-17:00", "every 30 minutes from midnight"), while reservations are
//! stored as instants. Converting between the two is where daylight saving
//! time bites: a local day can be 23 or 25 hours long, some wall-clock times
//! never happen and others happen twice. This module does that conversion in
//! one place, with jiff's time-zone database, so availability, the
//! opening-hours check on create/update and the stored `opening_hours` JSON all
//! agree on the same rules.

use std::fmt;

use jiff::civil::{Date, DateTime, Weekday};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{Span, Timestamp};
use serde::de::{self, Deserialize, Deserializer};
use serde::ser::{Serialize, SerializeStruct, Serializer};
use serde_json::Value;

use crate::domain::validation::{FieldError, Fields, json_kind, string};

const MINUTES_PER_DAY: u16 = 24 * 60;

/// More periods than this is almost certainly a client bug, and the limit keeps
/// the per-request conversion work bounded.
const MAX_PERIODS: usize = 100;

/// Half-open instant range [start, end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    pub start: Timestamp,
    pub end: Timestamp,
}

/// Minutes since local midnight, 0..=1440. Parsed from "HH:MM" (two-digit
/// hours and minutes, 00:00..=23:59, plus "24:00" which is only valid as a
/// close time). Display prints "HH:MM".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeOfDay(u16);

impl TimeOfDay {
    /// The end of the day; only meaningful as a close time.
    const END_OF_DAY: TimeOfDay = TimeOfDay(MINUTES_PER_DAY);

    pub fn parse(s: &str) -> Result<Self, String> {
        let invalid = || format!("must be a time \"HH:MM\" from 00:00 to 24:00, not {s:?}");
        // Strict two-digit fields: "9:00" or "09:00:00" are more likely a
        // client mistake than something worth guessing at.
        let &[h1, h2, b':', m1, m2] = s.as_bytes() else {
            return Err(invalid());
        };
        let digit = |b: u8| b.is_ascii_digit().then(|| u16::from(b - b'0'));
        let (Some(h1), Some(h2), Some(m1), Some(m2)) = (digit(h1), digit(h2), digit(m1), digit(m2))
        else {
            return Err(invalid());
        };
        let (hours, minutes) = (h1 * 10 + h2, m1 * 10 + m2);
        if minutes > 59 || hours > 24 || (hours == 24 && minutes != 0) {
            return Err(invalid());
        }
        Ok(TimeOfDay(hours * 60 + minutes))
    }

    pub fn minutes(self) -> u16 {
        self.0
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

impl Serialize for TimeOfDay {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpeningPeriod {
    pub weekday: Weekday,
    pub open: TimeOfDay,
    pub close: TimeOfDay,
}

impl OpeningPeriod {
    /// Whether the period runs past midnight into the next day.
    fn is_overnight(&self) -> bool {
        self.close <= self.open
    }

    fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if self.open == TimeOfDay::END_OF_DAY {
            return Err(("open", "must be a time from 00:00 to 23:59"));
        }
        // Equal times are ambiguous between "closed" and "open 24 hours";
        // "00:00"-"24:00" says the latter unambiguously.
        if self.close == self.open {
            return Err(("close", "must differ from open"));
        }
        Ok(())
    }
}

impl Serialize for OpeningPeriod {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("OpeningPeriod", 3)?;
        s.serialize_field("weekday", weekday_name(self.weekday))?;
        s.serialize_field("open", &self.open)?;
        s.serialize_field("close", &self.close)?;
        s.end()
    }
}

/// Non-empty list of periods. A period whose close <= open runs past midnight
/// into the next day (e.g. a bar open 18:00-02:00); close == open is invalid;
/// "24:00" is valid only as close; open "24:00" is invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpeningHours(Vec<OpeningPeriod>);

impl OpeningHours {
    /// For callers that build periods in code rather than from JSON. Applies
    /// the same rules as [`OpeningHours::from_json`]; an empty list is an error
    /// because "always open" is represented as `None`.
    pub fn new(periods: Vec<OpeningPeriod>) -> Result<Self, String> {
        if periods.is_empty() {
            return Err("must contain at least one period".to_owned());
        }
        if periods.len() > MAX_PERIODS {
            return Err(format!("must contain at most {MAX_PERIODS} periods"));
        }
        for (i, period) in periods.iter().enumerate() {
            period
                .check()
                .map_err(|(field, message)| format!("[{i}].{field}: {message}"))?;
        }
        Ok(OpeningHours(periods))
    }

    /// Parses the `opening_hours` request field: JSON null -> Ok(None); [] ->
    /// Ok(None) (always open); otherwise an array of objects
    /// `{"weekday": "mon".."sun", "open": "HH:MM", "close": "HH:MM"}`.
    ///
    /// Every problem is reported, with paths like `opening_hours[1].close`.
    /// `path` is the field's own path, e.g. `"opening_hours"`.
    pub fn from_json(value: &Value, path: &str) -> Result<Option<Self>, Vec<FieldError>> {
        let items = match value {
            Value::Null => return Ok(None),
            Value::Array(items) => items,
            other => {
                return Err(vec![FieldError::new(
                    path,
                    format!(
                        "must be an array of opening periods, not {}",
                        json_kind(other)
                    ),
                )]);
            }
        };
        if items.is_empty() {
            return Ok(None);
        }
        if items.len() > MAX_PERIODS {
            return Err(vec![FieldError::new(
                path,
                format!("must contain at most {MAX_PERIODS} periods"),
            )]);
        }
        let mut periods = Vec::with_capacity(items.len());
        let mut errors = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match parse_period(item, &format!("{path}[{i}]")) {
                Ok(period) => periods.push(period),
                Err(found) => errors.extend(found),
            }
        }
        if errors.is_empty() {
            Ok(Some(OpeningHours(periods)))
        } else {
            Err(errors)
        }
    }

    pub fn periods(&self) -> &[OpeningPeriod] {
        &self.0
    }
}

fn parse_period(item: &Value, prefix: &str) -> Result<OpeningPeriod, Vec<FieldError>> {
    let mut fields = Fields::new(item.clone(), prefix)?;
    let weekday = fields.required("weekday", |v| parse_weekday(string(v)?));
    let open = fields.required("open", |v| TimeOfDay::parse(string(v)?));
    let close = fields.required("close", |v| TimeOfDay::parse(string(v)?));
    let period = match (weekday, open, close) {
        (Some(weekday), Some(open), Some(close)) => Some(OpeningPeriod {
            weekday,
            open,
            close,
        }),
        _ => {
            // A bad open time must still be reported when another field
            // failed, so check it on its own.
            if open == Some(TimeOfDay::END_OF_DAY) {
                fields.error("open", "must be a time from 00:00 to 23:59");
            }
            None
        }
    };
    if let Some(Err((name, message))) = period.as_ref().map(OpeningPeriod::check) {
        fields.error(name, message);
    }
    fields.finish()?;
    // finish() succeeding means every field parsed.
    period.ok_or_else(Vec::new)
}

impl Serialize for OpeningHours {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(&self.0)
    }
}

impl<'de> Deserialize<'de> for OpeningHours {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Going through `from_json` keeps the stored form under exactly the
        // rules the API enforced when it was written.
        let value = Value::deserialize(deserializer)?;
        match OpeningHours::from_json(&value, "opening_hours") {
            Ok(Some(hours)) => Ok(hours),
            Ok(None) => Err(de::Error::custom(
                "opening_hours: must contain at least one period",
            )),
            Err(errors) => Err(de::Error::custom(
                errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            )),
        }
    }
}

fn parse_weekday(s: &str) -> Result<Weekday, String> {
    Ok(match s {
        "mon" => Weekday::Monday,
        "tue" => Weekday::Tuesday,
        "wed" => Weekday::Wednesday,
        "thu" => Weekday::Thursday,
        "fri" => Weekday::Friday,
        "sat" => Weekday::Saturday,
        "sun" => Weekday::Sunday,
        _ => {
            return Err(format!(
                "must be one of mon, tue, wed, thu, fri, sat, sun, not {s:?}"
            ));
        }
    })
}

fn weekday_name(weekday: Weekday) -> &'static str {
    match weekday {
        Weekday::Monday => "mon",
        Weekday::Tuesday => "tue",
        Weekday::Wednesday => "wed",
        Weekday::Thursday => "thu",
        Weekday::Friday => "fri",
        Weekday::Saturday => "sat",
        Weekday::Sunday => "sun",
    }
}

/// Merged, sorted instants when the resource is open that intersect
/// [from, to), clipped to [from, to). `None` means always open.
///
/// Open and close times go through jiff's "compatible" disambiguation: a time
/// skipped by a DST gap opens at the later instant (as a wall clock that jumps
/// forward would show), a repeated time at the earlier one. Overlapping and
/// touching intervals are merged, so "mon 00:00-24:00" plus "tue 00:00-12:00"
/// is one interval and a booking across Monday midnight fits.
pub fn open_intervals(
    hours: Option<&OpeningHours>,
    tz: &TimeZone,
    from: Timestamp,
    to: Timestamp,
) -> Vec<Interval> {
    if from >= to {
        return Vec::new();
    }
    let Some(hours) = hours else {
        return vec![Interval {
            start: from,
            end: to,
        }];
    };
    let mut intervals = Vec::new();
    // A period starting the day before `from` can run into it (overnight
    // periods, or a DST shift moving local dates relative to instants).
    for date in local_dates(tz, from, to) {
        let weekday = date.weekday();
        for period in hours.periods().iter().filter(|p| p.weekday == weekday) {
            let open = u32::from(period.open.minutes());
            let close = u32::from(period.close.minutes())
                + if period.is_overnight() {
                    u32::from(MINUTES_PER_DAY)
                } else {
                    0
                };
            let (Some(start), Some(end)) = (
                local_instant(tz, date, open),
                local_instant(tz, date, close),
            ) else {
                continue;
            };
            let (start, end) = (start.max(from), end.min(to));
            // A gap can push the opening past the close (02:30-03:00 on a
            // spring-forward night opens at 03:30); such a period never opens.
            if start < end {
                intervals.push(Interval { start, end });
            }
        }
    }
    intervals.sort_unstable_by_key(|i| i.start);
    let mut merged: Vec<Interval> = Vec::with_capacity(intervals.len());
    for interval in intervals {
        match merged.last_mut() {
            Some(last) if interval.start <= last.end => last.end = last.end.max(interval.end),
            _ => merged.push(interval),
        }
    }
    merged
}

/// True when [start, end) lies entirely inside one merged open interval
/// (`None` = always true).
pub fn is_open_for(
    hours: Option<&OpeningHours>,
    tz: &TimeZone,
    start: Timestamp,
    end: Timestamp,
) -> bool {
    if hours.is_none() {
        return true;
    }
    // Clipped to the booking, the open time covers it exactly when one merged
    // interval remains and it is the whole booking.
    open_intervals(hours, tz, start, end) == [Interval { start, end }]
}

/// Bookable slots for availability, sorted, each lying fully inside
/// [from, to) and fully inside an open interval.
///
/// Slot boundaries are the instants whose local wall-clock time is a multiple
/// of `slot_minutes` after local midnight, plus each local day's start (which
/// is not midnight where midnight falls in a DST gap). Consecutive boundaries
/// form the slots, so an hourly grid has 23 slots on a spring-forward day and
/// 25 on a fall-back day, with both 01:00s bookable. When `slot_minutes` does
/// not divide a day, the short slot that would cross midnight is dropped and
/// the grid restarts at the next local midnight. A `slot_minutes` of 0 or
/// above 1440 yields no slots.
pub fn slots(
    hours: Option<&OpeningHours>,
    tz: &TimeZone,
    slot_minutes: u16,
    from: Timestamp,
    to: Timestamp,
) -> Vec<Interval> {
    if slot_minutes == 0 || slot_minutes > MINUTES_PER_DAY {
        return Vec::new();
    }
    let open = open_intervals(hours, tz, from, to);
    if open.is_empty() {
        return Vec::new();
    }
    let drop_day_end = !MINUTES_PER_DAY.is_multiple_of(slot_minutes);

    let mut boundaries = Vec::new();
    let mut day_starts = Vec::new();
    for date in local_dates(tz, from, to) {
        // Same as jiff's `Zoned::start_of_day`: midnight with "compatible"
        // disambiguation, i.e. the end of a gap that swallows midnight.
        if let Some(start) = local_instant(tz, date, 0) {
            day_starts.push(start);
            boundaries.push(start);
        }
        for minute in (0..MINUTES_PER_DAY).step_by(usize::from(slot_minutes)) {
            let Some(civil) = local_datetime(date, u32::from(minute)) else {
                continue;
            };
            // Every instant showing this wall-clock time: none in a gap, two
            // in a fold, so that both occurrences of a repeated hour are slots.
            let ambiguous = tz.to_ambiguous_timestamp(civil);
            match ambiguous.offset() {
                AmbiguousOffset::Unambiguous { .. } => boundaries.extend(ambiguous.compatible()),
                AmbiguousOffset::Gap { .. } => {}
                AmbiguousOffset::Fold { .. } => {
                    boundaries.extend(ambiguous.earlier());
                    boundaries.extend(ambiguous.later());
                }
            }
        }
    }
    boundaries.sort_unstable();
    boundaries.dedup();
    day_starts.sort_unstable();

    let mut result = Vec::new();
    let mut open = open.iter().peekable();
    for pair in boundaries.windows(2) {
        let slot = Interval {
            start: pair[0],
            end: pair[1],
        };
        // The slot ending at a day start is the one from the previous day's
        // last grid point; with a non-divisor it is short and would straddle
        // two days' grids.
        if drop_day_end && day_starts.binary_search(&slot.end).is_ok() {
            continue;
        }
        // Both lists are sorted and slots never overlap, so an open interval
        // ending before this slot ends cannot hold this or any later slot.
        while open.next_if(|o| o.end < slot.end).is_some() {}
        let Some(current) = open.peek() else {
            break;
        };
        if current.start <= slot.start && slot.end <= current.end {
            result.push(slot);
        }
    }
    result
}

/// Local dates from the day before `from` to the day after `to`, wide enough
/// for periods and grid points of neighbouring days that reach into the window.
fn local_dates(tz: &TimeZone, from: Timestamp, to: Timestamp) -> impl Iterator<Item = Date> {
    let first = tz.to_datetime(from).date();
    let first = first.yesterday().unwrap_or(first);
    let last = tz.to_datetime(to).date();
    let last = last.tomorrow().unwrap_or(last);
    std::iter::successors(Some(first), move |date| {
        date.tomorrow().ok().filter(|next| *next <= last)
    })
}

/// `minutes` after the start of `date` on the wall clock, where 1440 and up
/// are on following days (so "24:00" is the next day's 00:00).
fn local_datetime(date: Date, minutes: u32) -> Option<DateTime> {
    let per_day = u32::from(MINUTES_PER_DAY);
    let date = match minutes / per_day {
        0 => date,
        days => date.checked_add(Span::new().days(i64::from(days))).ok()?,
    };
    let minutes = minutes % per_day;
    // Both parts are < 24 and < 60 here.
    Some(date.at((minutes / 60) as i8, (minutes % 60) as i8, 0, 0))
}

/// The instant a wall clock in `tz` shows `minutes` after the start of `date`,
/// with "compatible" disambiguation.
fn local_instant(tz: &TimeZone, date: Date, minutes: u32) -> Option<Timestamp> {
    let civil = local_datetime(date, minutes)?;
    tz.to_ambiguous_timestamp(civil).compatible().ok()
}

#[cfg(test)]
mod tests {
    use jiff::SignedDuration;
    use serde_json::json;

    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn tz(name: &str) -> TimeZone {
        TimeZone::get(name).unwrap()
    }

    fn hours(value: Value) -> OpeningHours {
        OpeningHours::from_json(&value, "opening_hours")
            .unwrap()
            .unwrap()
    }

    fn local(tz: &TimeZone, t: Timestamp) -> String {
        tz.to_datetime(t).strftime("%a %H:%M").to_string()
    }

    fn assert_contiguous(slots: &[Interval]) {
        for pair in slots.windows(2) {
            assert_eq!(pair[0].end, pair[1].start, "gap or overlap in {slots:?}");
        }
        for slot in slots {
            assert!(slot.start < slot.end);
        }
    }

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn time_of_day_parses_strictly_and_displays() {
        assert_eq!(TimeOfDay::parse("00:00").unwrap().minutes(), 0);
        assert_eq!(TimeOfDay::parse("09:15").unwrap().minutes(), 555);
        assert_eq!(TimeOfDay::parse("23:59").unwrap().minutes(), 1439);
        assert_eq!(TimeOfDay::parse("24:00").unwrap().minutes(), 1440);
        for bad in [
            "25:00",
            "9:00",
            "12:60",
            "24:01",
            "",
            "12:5",
            "1200",
            "12-00",
            "+1:00",
            "09:00:00",
            "０９:00",
        ] {
            assert!(TimeOfDay::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(TimeOfDay::parse("07:05").unwrap().to_string(), "07:05");
        assert_eq!(TimeOfDay::parse("24:00").unwrap().to_string(), "24:00");
    }

    #[test]
    fn berlin_spring_forward_has_23_hourly_slots() {
        let berlin = tz("Europe/Berlin");
        let (from, to) = (ts("2026-03-28T23:00:00Z"), ts("2026-03-29T22:00:00Z"));
        let slots = slots(None, &berlin, 60, from, to);
        assert_eq!(slots.len(), 23);
        assert_contiguous(&slots);
        assert_eq!(slots[0].start, from);
        assert_eq!(slots[22].end, to);
        let mut starts: Vec<_> = slots.iter().map(|s| s.start).collect();
        starts.dedup();
        assert_eq!(starts.len(), 23);
        assert!(
            slots
                .iter()
                .all(|s| s.end.duration_since(s.start) == SignedDuration::from_hours(1))
        );
    }

    #[test]
    fn new_york_fall_back_has_25_hourly_slots() {
        let ny = tz("America/New_York");
        let (from, to) = (ts("2026-11-01T04:00:00Z"), ts("2026-11-02T05:00:00Z"));
        let slots = slots(None, &ny, 60, from, to);
        assert_eq!(slots.len(), 25);
        assert_contiguous(&slots);
        assert_eq!((slots[0].start, slots[24].end), (from, to));
        let starts: Vec<_> = slots.iter().map(|s| s.start).collect();
        // The first and the repeated 01:00.
        assert!(starts.contains(&ts("2026-11-01T05:00:00Z")));
        assert!(starts.contains(&ts("2026-11-01T06:00:00Z")));
    }

    #[test]
    fn half_hour_slots_on_dst_days() {
        let berlin = tz("Europe/Berlin");
        let spring = slots(
            None,
            &berlin,
            30,
            ts("2026-03-28T23:00:00Z"),
            ts("2026-03-29T22:00:00Z"),
        );
        assert_eq!(spring.len(), 46);
        assert_contiguous(&spring);

        let ny = tz("America/New_York");
        let fall = slots(
            None,
            &ny,
            30,
            ts("2026-11-01T04:00:00Z"),
            ts("2026-11-02T05:00:00Z"),
        );
        assert_eq!(fall.len(), 50);
        assert_contiguous(&fall);
    }

    #[test]
    fn day_long_slots_follow_the_local_day_length() {
        let berlin = tz("Europe/Berlin");
        let spring = slots(
            None,
            &berlin,
            1440,
            ts("2026-03-28T23:00:00Z"),
            ts("2026-03-29T22:00:00Z"),
        );
        assert_eq!(
            spring,
            [Interval {
                start: ts("2026-03-28T23:00:00Z"),
                end: ts("2026-03-29T22:00:00Z"),
            }]
        );

        let ny = tz("America/New_York");
        let fall = slots(
            None,
            &ny,
            1440,
            ts("2026-11-01T04:00:00Z"),
            ts("2026-11-02T05:00:00Z"),
        );
        assert_eq!(fall.len(), 1);
        assert_eq!(
            fall[0].end.duration_since(fall[0].start),
            SignedDuration::from_hours(25)
        );
    }

    #[test]
    fn midnight_in_a_gap_starts_the_day_at_the_gap_end() {
        // Clocks jumped from 00:00 to 01:00 on 2015-10-18 in São Paulo.
        let sp = tz("America/Sao_Paulo");
        let slots = slots(
            None,
            &sp,
            60,
            ts("2015-10-18T03:00:00Z"),
            ts("2015-10-19T02:00:00Z"),
        );
        assert_eq!(slots.len(), 23);
        assert_contiguous(&slots);
        assert_eq!(local(&sp, slots[0].start), "Sun 01:00");
    }

    #[test]
    fn weekday_hours_with_half_hour_slots() {
        let berlin = tz("Europe/Berlin");
        let weekdays = hours(json!(
            ["mon", "tue", "wed", "thu", "fri"]
                .iter()
                .map(|d| json!({"weekday": d, "open": "09:00", "close": "17:00"}))
                .collect::<Vec<_>>()
        ));
        // Wednesday 2026-06-10, CEST.
        let wed = slots(
            Some(&weekdays),
            &berlin,
            30,
            ts("2026-06-09T22:00:00Z"),
            ts("2026-06-10T22:00:00Z"),
        );
        assert_eq!(wed.len(), 16);
        assert_contiguous(&wed);
        assert_eq!(local(&berlin, wed[0].start), "Wed 09:00");
        assert_eq!(local(&berlin, wed[15].end), "Wed 17:00");

        let sat = slots(
            Some(&weekdays),
            &berlin,
            30,
            ts("2026-06-12T22:00:00Z"),
            ts("2026-06-13T22:00:00Z"),
        );
        assert!(sat.is_empty());

        let quarter_past = hours(json!([{"weekday": "wed", "open": "09:15", "close": "17:00"}]));
        let wed = slots(
            Some(&quarter_past),
            &berlin,
            30,
            ts("2026-06-09T22:00:00Z"),
            ts("2026-06-10T22:00:00Z"),
        );
        assert_eq!(local(&berlin, wed[0].start), "Wed 09:30");
        assert_eq!(wed.len(), 15);
    }

    #[test]
    fn overnight_period_runs_into_the_next_day() {
        let berlin = tz("Europe/Berlin");
        let bar = hours(json!([{"weekday": "sat", "open": "18:00", "close": "02:00"}]));
        // Saturday 2026-06-13 00:00 to Monday 00:00 local.
        let slots = slots(
            Some(&bar),
            &berlin,
            60,
            ts("2026-06-12T22:00:00Z"),
            ts("2026-06-14T22:00:00Z"),
        );
        assert_eq!(slots.len(), 8);
        assert_contiguous(&slots);
        assert_eq!(local(&berlin, slots[0].start), "Sat 18:00");
        assert_eq!(local(&berlin, slots[7].end), "Sun 02:00");

        // A window starting on Sunday still sees the tail of Saturday's period.
        let tail = super::slots(
            Some(&bar),
            &berlin,
            60,
            ts("2026-06-13T22:00:00Z"),
            ts("2026-06-14T22:00:00Z"),
        );
        assert_eq!(tail.len(), 2);
        assert_eq!(local(&berlin, tail[0].start), "Sun 00:00");
    }

    #[test]
    fn partial_slots_at_the_window_edges_are_excluded() {
        let utc = TimeZone::UTC;
        let slots = slots(
            None,
            &utc,
            60,
            ts("2026-06-10T10:15:00Z"),
            ts("2026-06-10T12:45:00Z"),
        );
        assert_eq!(
            slots,
            [Interval {
                start: ts("2026-06-10T11:00:00Z"),
                end: ts("2026-06-10T12:00:00Z"),
            },]
        );
    }

    #[test]
    fn touching_periods_merge_and_gaps_do_not() {
        let berlin = tz("Europe/Berlin");
        let two_days = hours(json!([
            {"weekday": "mon", "open": "00:00", "close": "24:00"},
            {"weekday": "tue", "open": "00:00", "close": "12:00"},
        ]));
        // Monday 2026-06-08.
        let open = open_intervals(
            Some(&two_days),
            &berlin,
            ts("2026-06-07T00:00:00Z"),
            ts("2026-06-10T00:00:00Z"),
        );
        assert_eq!(
            open,
            [Interval {
                start: ts("2026-06-07T22:00:00Z"),
                end: ts("2026-06-09T10:00:00Z"),
            }]
        );
        assert!(is_open_for(
            Some(&two_days),
            &berlin,
            ts("2026-06-08T21:00:00Z"),
            ts("2026-06-08T23:00:00Z"),
        ));

        let lunch_break = hours(json!([
            {"weekday": "mon", "open": "09:00", "close": "12:00"},
            {"weekday": "mon", "open": "13:00", "close": "17:00"},
        ]));
        assert!(!is_open_for(
            Some(&lunch_break),
            &berlin,
            ts("2026-06-08T09:30:00Z"),
            ts("2026-06-08T11:30:00Z"),
        ));
        assert!(is_open_for(
            Some(&lunch_break),
            &berlin,
            ts("2026-06-08T07:00:00Z"),
            ts("2026-06-08T10:00:00Z"),
        ));
        assert!(!is_open_for(
            Some(&lunch_break),
            &berlin,
            ts("2026-06-08T06:59:00Z"),
            ts("2026-06-08T08:00:00Z"),
        ));
        assert!(is_open_for(
            None,
            &berlin,
            ts("2026-06-08T00:00:00Z"),
            ts("2026-06-20T00:00:00Z"),
        ));
    }

    #[test]
    fn opening_times_in_gaps_and_folds_are_compatible() {
        // 02:30 does not exist in Berlin on 2026-03-29; the clock shows 03:30.
        let berlin = tz("Europe/Berlin");
        let gap = hours(json!([{"weekday": "sun", "open": "02:30", "close": "05:00"}]));
        let open = open_intervals(
            Some(&gap),
            &berlin,
            ts("2026-03-28T23:00:00Z"),
            ts("2026-03-29T22:00:00Z"),
        );
        assert_eq!(
            open,
            [Interval {
                start: ts("2026-03-29T01:30:00Z"),
                end: ts("2026-03-29T03:00:00Z"),
            }]
        );
        // Opening at 03:30 after a 03:00 close: never open that night.
        let lost = hours(json!([{"weekday": "sun", "open": "02:30", "close": "03:00"}]));
        assert!(
            open_intervals(
                Some(&lost),
                &berlin,
                ts("2026-03-28T23:00:00Z"),
                ts("2026-03-29T22:00:00Z"),
            )
            .is_empty()
        );

        // 01:30 happens twice in New York on 2026-11-01; opening uses the first.
        let ny = tz("America/New_York");
        let fold = hours(json!([{"weekday": "sun", "open": "01:30", "close": "03:00"}]));
        let open = open_intervals(
            Some(&fold),
            &ny,
            ts("2026-11-01T04:00:00Z"),
            ts("2026-11-02T05:00:00Z"),
        );
        assert_eq!(
            open,
            [Interval {
                start: ts("2026-11-01T05:30:00Z"),
                end: ts("2026-11-01T08:00:00Z"),
            }]
        );
    }

    #[test]
    fn open_intervals_are_clipped_and_none_is_always_open() {
        let utc = TimeZone::UTC;
        let (from, to) = (ts("2026-06-10T10:00:00Z"), ts("2026-06-10T11:00:00Z"));
        assert_eq!(
            open_intervals(None, &utc, from, to),
            [Interval {
                start: from,
                end: to
            }]
        );
        assert!(open_intervals(None, &utc, to, from).is_empty());
        let wed = hours(json!([{"weekday": "wed", "open": "09:00", "close": "17:00"}]));
        assert_eq!(
            open_intervals(Some(&wed), &utc, from, to),
            [Interval {
                start: from,
                end: to
            }]
        );
    }

    #[test]
    fn non_divisor_slots_never_cross_midnight() {
        let berlin = tz("Europe/Berlin");
        // Three ordinary days in June.
        let slots = slots(
            None,
            &berlin,
            25,
            ts("2026-06-09T22:00:00Z"),
            ts("2026-06-12T22:00:00Z"),
        );
        // 00:00, 00:25, ... 23:20 start a slot; 23:45 would cross midnight.
        assert_eq!(slots.len(), 3 * 57);
        for slot in &slots {
            assert_eq!(
                slot.end.duration_since(slot.start),
                SignedDuration::from_mins(25)
            );
            let (start, end) = (berlin.to_datetime(slot.start), berlin.to_datetime(slot.end));
            assert_eq!(start.date(), end.date(), "{slot:?} crosses midnight");
            assert_eq!(
                (i32::from(start.hour()) * 60 + i32::from(start.minute())) % 25,
                0
            );
        }
        assert_eq!(local(&berlin, slots[57].start), "Thu 00:00");
    }

    #[test]
    fn slots_respect_minimum_size_and_month_long_windows() {
        let utc = TimeZone::UTC;
        let (from, to) = (ts("2026-01-01T00:00:00Z"), ts("2026-02-01T00:00:00Z"));
        let slots = slots(None, &utc, 5, from, to);
        assert_eq!(slots.len(), 31 * 288);
        assert_contiguous(&slots);
        assert!(super::slots(None, &utc, 0, from, to).is_empty());
        assert!(super::slots(None, &utc, 60, to, from).is_empty());
    }

    #[test]
    fn from_json_accepts_valid_hours() {
        assert_eq!(
            OpeningHours::from_json(&Value::Null, "opening_hours").unwrap(),
            None
        );
        assert_eq!(
            OpeningHours::from_json(&json!([]), "opening_hours").unwrap(),
            None
        );
        let parsed = hours(json!([
            {"weekday": "mon", "open": "09:00", "close": "24:00"},
            {"weekday": "sat", "open": "18:00", "close": "02:00"},
            {"weekday": "sun", "open": "00:00", "close": "24:00"},
        ]));
        assert_eq!(
            parsed.periods()[0],
            OpeningPeriod {
                weekday: Weekday::Monday,
                open: TimeOfDay(540),
                close: TimeOfDay(1440),
            }
        );
        assert_eq!(parsed.periods().len(), 3);
    }

    #[test]
    fn from_json_collects_every_error_with_paths() {
        let errors = OpeningHours::from_json(
            &json!([
                {"weekday": "mon", "open": "09:00", "close": "17:00"},
                {"weekday": "monday", "open": "25:00", "close": "9:00"},
                {"weekday": "tue", "open": "12:60", "close": "17:00", "note": 1},
                {"weekday": "wed", "open": "24:00", "close": "17:00"},
                {"weekday": "thu", "open": "10:00", "close": "10:00"},
                {"weekday": "fri", "open": 9},
                "sat",
            ]),
            "opening_hours",
        )
        .unwrap_err();
        assert_eq!(
            fields(&errors),
            [
                "opening_hours[1].weekday",
                "opening_hours[1].open",
                "opening_hours[1].close",
                "opening_hours[2].open",
                "opening_hours[2].note",
                "opening_hours[3].open",
                "opening_hours[4].close",
                "opening_hours[5].open",
                "opening_hours[5].close",
                "opening_hours[6]",
            ]
        );
        assert_eq!(errors[4].message, "unknown field");
        assert_eq!(errors[6].message, "must differ from open");

        // 24:00 as open is reported even when another field is also bad.
        let errors = OpeningHours::from_json(
            &json!([{"weekday": "xyz", "open": "24:00", "close": "17:00"}]),
            "hours",
        )
        .unwrap_err();
        assert_eq!(fields(&errors), ["hours[0].weekday", "hours[0].open"]);
    }

    #[test]
    fn from_json_rejects_wrong_shapes_and_too_many_periods() {
        let errors =
            OpeningHours::from_json(&json!({"mon": "09:00"}), "opening_hours").unwrap_err();
        assert_eq!(fields(&errors), ["opening_hours"]);
        let many = vec![json!({"weekday": "mon", "open": "09:00", "close": "17:00"}); 101];
        let errors = OpeningHours::from_json(&Value::Array(many), "opening_hours").unwrap_err();
        assert_eq!(fields(&errors), ["opening_hours"]);
        let hundred = vec![json!({"weekday": "mon", "open": "09:00", "close": "17:00"}); 100];
        assert!(OpeningHours::from_json(&Value::Array(hundred), "opening_hours").is_ok());
    }

    #[test]
    fn serde_round_trip() {
        let original = json!([
            {"weekday": "mon", "open": "09:00", "close": "17:00"},
            {"weekday": "sat", "open": "18:00", "close": "02:00"},
            {"weekday": "sun", "open": "00:00", "close": "24:00"},
        ]);
        let parsed = hours(original.clone());
        assert_eq!(serde_json::to_value(&parsed).unwrap(), original);
        let text = serde_json::to_string(&parsed).unwrap();
        assert_eq!(
            text,
            r#"[{"weekday":"mon","open":"09:00","close":"17:00"},{"weekday":"sat","open":"18:00","close":"02:00"},{"weekday":"sun","open":"00:00","close":"24:00"}]"#
        );
        let back: OpeningHours = serde_json::from_str(&text).unwrap();
        assert_eq!(back, parsed);
        let nullable: Option<OpeningHours> = serde_json::from_str("null").unwrap();
        assert_eq!(nullable, None);

        let err = serde_json::from_str::<OpeningHours>(
            r#"[{"weekday":"mon","open":"09:00","close":"09:00"}]"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("opening_hours[0].close"), "{err}");
        assert!(serde_json::from_str::<OpeningHours>("[]").is_err());
    }

    #[test]
    fn new_applies_the_same_rules() {
        let period = |open, close| OpeningPeriod {
            weekday: Weekday::Friday,
            open: TimeOfDay::parse(open).unwrap(),
            close: TimeOfDay::parse(close).unwrap(),
        };
        assert!(OpeningHours::new(vec![period("09:00", "24:00")]).is_ok());
        assert!(OpeningHours::new(vec![period("24:00", "09:00")]).is_err());
        assert!(OpeningHours::new(vec![period("09:00", "09:00")]).is_err());
        assert!(OpeningHours::new(Vec::new()).is_err());
    }
}
