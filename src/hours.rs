//! A group's opening hours: the hours of each weekday and the holidays, in
//! the group's time zone (the IANA database built into the binary, so a
//! machine without tzdata reads them alike). Outside them customers cannot
//! ask for help; cases already waiting keep waiting.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

/// How far ahead the next opening is looked for.
const HORIZON_DAYS: usize = 400;
/// Holidays a group may list.
pub const MAX_HOLIDAYS: usize = 1000;
/// Ranges a day may have.
const MAX_RANGES: usize = 8;

/// `hours = { tz = "Europe/Berlin", mon = "08:00-18:00", …, holidays =
/// ["2026-12-25"] }` as the config file writes it. A day left out is
/// closed; a day may have several ranges (`"08:00-12:00, 13:00-17:00"`).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HoursConfig {
    pub tz: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mon: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tue: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wed: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thu: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sat: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sun: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holidays: Vec<String>,
}

/// Opening hours, parsed.
#[derive(Clone, Debug)]
pub struct Hours {
    /// As the config file wrote it (for an export).
    config: HoursConfig,
    tz: TimeZone,
    /// Per weekday, Monday first: the open ranges in minutes of the day
    /// (end exclusive, up to 1440), sorted, not overlapping.
    days: [Vec<(u16, u16)>; 7],
    holidays: BTreeSet<Date>,
}

/// What is wrong with a group's `hours`: the key it is about and why.
#[derive(Debug, PartialEq, Eq)]
pub struct HoursError {
    pub key: String,
    pub message: String,
}

fn bad(key: &str, message: impl Into<String>) -> HoursError {
    HoursError {
        key: key.to_string(),
        message: message.into(),
    }
}

impl HoursConfig {
    /// Parses and checks the table.
    pub fn parse(&self) -> Result<Hours, HoursError> {
        let tz = TimeZone::get(&self.tz)
            .map_err(|_| bad("tz", format!("unknown time zone \"{}\"", self.tz)))?;
        let named = [
            ("mon", &self.mon),
            ("tue", &self.tue),
            ("wed", &self.wed),
            ("thu", &self.thu),
            ("fri", &self.fri),
            ("sat", &self.sat),
            ("sun", &self.sun),
        ];
        let mut days: [Vec<(u16, u16)>; 7] = Default::default();
        for (i, (key, text)) in named.iter().enumerate() {
            if let Some(text) = text {
                days[i] = ranges(text).map_err(|m| bad(key, m))?;
            }
        }
        if self.holidays.len() > MAX_HOLIDAYS {
            return Err(bad("holidays", format!("at most {MAX_HOLIDAYS} dates")));
        }
        let mut holidays = BTreeSet::new();
        for h in &self.holidays {
            let date: Date = h
                .parse()
                .map_err(|_| bad("holidays", format!("\"{h}\" is not a date (YYYY-MM-DD)")))?;
            holidays.insert(date);
        }
        Ok(Hours {
            config: self.clone(),
            tz,
            days,
            holidays,
        })
    }
}

/// `"08:00-12:00, 13:00-17:00"`: ranges within one day, in order.
fn ranges(text: &str) -> Result<Vec<(u16, u16)>, String> {
    let mut out: Vec<(u16, u16)> = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        let (a, b) = part
            .split_once('-')
            .ok_or_else(|| format!("\"{part}\" is not a range like \"08:00-18:00\""))?;
        let (start, end) = (minute(a.trim())?, minute(b.trim())?);
        if start >= end {
            return Err(format!("\"{part}\" ends before it starts"));
        }
        if out.last().is_some_and(|&(_, e)| start < e) {
            return Err(format!(
                "\"{part}\" overlaps or precedes the range before it"
            ));
        }
        out.push((start, end));
    }
    if out.len() > MAX_RANGES {
        return Err(format!("at most {MAX_RANGES} ranges a day"));
    }
    Ok(out)
}

/// `HH:MM` as minutes of the day; `24:00` is the day's end.
fn minute(text: &str) -> Result<u16, String> {
    let err = || format!("\"{text}\" is not a time like \"08:30\" (00:00 to 24:00)");
    let (h, m) = text.split_once(':').ok_or_else(err)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(err());
    }
    let (h, m): (u16, u16) = (h.parse().map_err(|_| err())?, m.parse().map_err(|_| err())?);
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(err());
    }
    Ok(h * 60 + m)
}

impl Hours {
    /// The table as the config file wrote it.
    pub fn config(&self) -> &HoursConfig {
        &self.config
    }

    /// True when the group is open at `at`.
    pub fn is_open(&self, at: DateTime<Utc>) -> bool {
        let Some((date, minute)) = self.local(at) else {
            return true;
        };
        !self.holidays.contains(&date)
            && self
                .day(date)
                .iter()
                .any(|&(s, e)| s <= minute && minute < e)
    }

    /// When the group opens next after `at` (when closed then); `None` when
    /// it opens on no day of the next 400.
    pub fn opens_at(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let (today, now) = self.local(at)?;
        let mut date = today;
        for offset in 0..HORIZON_DAYS {
            if !self.holidays.contains(&date) {
                for &(start, end) in self.day(date) {
                    if offset == 0 && start <= now {
                        if now < end {
                            return Some(at);
                        }
                        continue;
                    }
                    let local = date.at((start / 60) as i8, (start % 60) as i8, 0, 0);
                    let ts = local.to_zoned_datetime(self.tz.clone()).ok()?.timestamp();
                    return DateTime::from_timestamp_millis(ts.as_millisecond());
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }

    /// The local date and minute of the day of `at`.
    fn local(&self, at: DateTime<Utc>) -> Option<(Date, u16)> {
        let ts = Timestamp::from_millisecond(at.timestamp_millis()).ok()?;
        let zoned = ts.to_zoned_datetime(self.tz.clone());
        let time = zoned.time();
        Some((zoned.date(), time.hour() as u16 * 60 + time.minute() as u16))
    }

    fn day(&self, date: Date) -> &[(u16, u16)] {
        &self.days[date.weekday().to_monday_zero_offset() as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn berlin() -> Hours {
        HoursConfig {
            tz: "Europe/Berlin".into(),
            mon: Some("08:00-12:00, 13:00-18:00".into()),
            tue: Some("08:00-18:00".into()),
            fri: Some("00:00-24:00".into()),
            holidays: vec!["2026-12-08".into()],
            ..Default::default()
        }
        .parse()
        .unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn open_within_the_ranges_of_the_local_day() {
        let h = berlin();
        // Monday 7 Dec 2026, 09:00 in Berlin (UTC+1).
        assert!(h.is_open(utc("2026-12-07T08:00:00Z")));
        // Lunch, then before eight.
        assert!(!h.is_open(utc("2026-12-07T11:30:00Z")));
        assert!(!h.is_open(utc("2026-12-07T06:59:00Z")));
        // 18:00 is closed (the end is exclusive).
        assert!(!h.is_open(utc("2026-12-07T17:00:00Z")));
        // Tuesday 8 Dec is a holiday; Wednesday has no hours.
        assert!(!h.is_open(utc("2026-12-08T10:00:00Z")));
        assert!(!h.is_open(utc("2026-12-09T10:00:00Z")));
        // Friday, all day.
        assert!(h.is_open(utc("2026-12-10T23:30:00Z")));
    }

    #[test]
    fn the_next_opening_skips_lunch_holidays_and_closed_days() {
        let h = berlin();
        assert_eq!(
            h.opens_at(utc("2026-12-07T11:30:00Z")),
            Some(utc("2026-12-07T12:00:00Z"))
        );
        // Monday evening: Tuesday is a holiday, Wednesday and Thursday
        // closed, Friday opens at midnight (Thursday 23:00 UTC).
        assert_eq!(
            h.opens_at(utc("2026-12-07T18:00:00Z")),
            Some(utc("2026-12-10T23:00:00Z"))
        );
    }

    #[test]
    fn the_next_opening_follows_summer_time() {
        // Sunday 29 March 2026 Berlin moves to UTC+2: Monday 08:00 is 06:00Z.
        let h = berlin();
        assert_eq!(
            h.opens_at(utc("2026-03-28T12:00:00Z")),
            Some(utc("2026-03-30T06:00:00Z"))
        );
    }

    #[test]
    fn never_open_has_no_next_opening() {
        let h = HoursConfig {
            tz: "UTC".into(),
            ..Default::default()
        }
        .parse()
        .unwrap();
        assert!(!h.is_open(utc("2026-12-07T12:00:00Z")));
        assert_eq!(h.opens_at(utc("2026-12-07T12:00:00Z")), None);
    }

    #[test]
    fn bad_tables_name_their_key() {
        let parse = |c: HoursConfig| c.parse().unwrap_err().key;
        let base = || HoursConfig {
            tz: "UTC".into(),
            ..Default::default()
        };
        assert_eq!(
            parse(HoursConfig {
                tz: "Mars/Olympus".into(),
                ..base()
            }),
            "tz"
        );
        for bad in [
            "8-18",
            "18:00-08:00",
            "08:00-24:30",
            "08:00-12:00,11:00-13:00",
            "25:00-26:00",
            "08:00",
        ] {
            assert_eq!(
                parse(HoursConfig {
                    mon: Some(bad.into()),
                    ..base()
                }),
                "mon",
                "{bad}"
            );
        }
        assert_eq!(
            parse(HoursConfig {
                holidays: vec!["25.12.2026".into()],
                ..base()
            }),
            "holidays"
        );
    }
}
