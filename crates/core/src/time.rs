//! Timestamps (milliseconds since the Unix epoch, UTC) and the clock that produces them.
//!
//! Components take a [`Clock`] instead of reading the system time, so tests can control time.

use std::fmt;

/// Milliseconds since 1970-01-01T00:00:00Z (the default: the epoch). Stored as `BIGINT` in SQL on every backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    pub fn as_millis(self) -> i64 {
        self.0
    }

    /// RFC 3339 in UTC with second precision (`2026-11-22T14:13:01Z`), the form GitHub's API uses.
    pub fn to_rfc3339(self) -> String {
        self.to_string()
    }

    /// The time as a job log line starts with it, GitHub's way: `2026-12-04T14:01:20.1230000Z`
    /// (seven digits of the second; ours are milliseconds).
    pub fn log_stamp(self) -> String {
        let second = Timestamp(self.0.div_euclid(1000) * 1000).to_string();
        format!("{}.{:03}0000Z", second.trim_end_matches('Z'), self.0.rem_euclid(1000))
    }

    /// Splits a job log line into the time it starts with ([`Timestamp::log_stamp`] and a space)
    /// and the rest; a line without one (an older log, or a line the server added) is all text.
    pub fn split_log_stamp(line: &str) -> (Option<&str>, &str) {
        const SHAPE: &[u8; 28] = b"0000-00-00T00:00:00.0000000Z";
        let bytes = line.as_bytes();
        let stamped = bytes.len() > SHAPE.len()
            && bytes[SHAPE.len()] == b' '
            && SHAPE
                .iter()
                .zip(bytes)
                .all(|(want, got)| if *want == b'0' { got.is_ascii_digit() } else { want == got });
        if stamped { (Some(&line[..SHAPE.len()]), &line[SHAPE.len() + 1..]) } else { (None, line) }
    }

    /// Midnight UTC of the first day of this timestamp's month.
    pub fn month_start(self) -> Timestamp {
        let days = self.0.div_euclid(86_400_000);
        let (year, month, _) = civil_from_days(days);
        Timestamp(days_from_civil(year, month, 1) * 86_400_000)
    }

    /// Reads what [`Timestamp::to_rfc3339`] writes (`YYYY-MM-DDTHH:MM:SSZ`, fractions of a second
    /// allowed); `None` for anything else.
    pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
        let text = text.strip_suffix('Z')?;
        let (date, time) = text.split_once('T')?;
        let mut date = date.splitn(3, '-');
        let year: i64 = date.next()?.parse().ok()?;
        let month: u32 = date.next()?.parse().ok()?;
        let day: u32 = date.next()?.parse().ok()?;
        let (time, fraction) = time.split_once('.').unwrap_or((time, ""));
        let mut time = time.splitn(3, ':');
        let hour: i64 = time.next()?.parse().ok()?;
        let minute: i64 = time.next()?.parse().ok()?;
        let second: i64 = time.next()?.parse().ok()?;
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
            return None;
        }
        let millis: i64 = match fraction {
            "" => 0,
            digits if digits.bytes().all(|b| b.is_ascii_digit()) => format!("{digits:0<3}").get(..3)?.parse().ok()?,
            _ => return None,
        };
        let days = days_from_civil(year, month, day);
        Some(Timestamp(((days * 86_400 + hour * 3600 + minute * 60 + second) * 1000) + millis))
    }
}

/// Howard Hinnant's `days_from_civil`: a proleptic Gregorian date to days since the epoch.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        let secs_of_day = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
            secs_of_day / 3600,
            secs_of_day % 3600 / 60,
            secs_of_day % 60
        )
    }
}

/// Howard Hinnant's `civil_from_days`: days since the epoch to a proleptic Gregorian date.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Timestamp(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_stamps_are_githubs_and_split_off_again() {
        let at = Timestamp::parse_rfc3339("2026-12-04T14:01:20Z").expect("time").0 + 123;
        let stamp = Timestamp(at).log_stamp();
        assert_eq!(stamp, "2026-12-04T14:01:20.1230000Z");
        let line = format!("{stamp} ##[group]Run make");
        assert_eq!(Timestamp::split_log_stamp(&line), (Some(stamp.as_str()), "##[group]Run make"));
        assert_eq!(Timestamp::parse_rfc3339(&stamp).map(|t| t.0), Some(at));
        for plain in
            ["", "hello", "2026-12-04T14:01:20.1230000Z", "2026-12-04T14:01:20Z text", "2026-12-04 14:01:20.1230000Z x"]
        {
            assert_eq!(Timestamp::split_log_stamp(plain), (None, plain));
        }
        assert_eq!(
            Timestamp::split_log_stamp("2026-12-04T14:01:20.1230000Z "),
            (Some("2026-12-04T14:01:20.1230000Z"), "")
        );
    }

    #[test]
    fn rfc3339_parses_what_it_writes() {
        for ms in [0, 1_000, 951_782_400_000, 1_795_440_781_000, -86_400_000, 4_102_444_800_000] {
            let t = Timestamp(ms);
            assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t), "{t}");
        }
        assert_eq!(Timestamp::parse_rfc3339("1970-01-01T00:00:01.5Z"), Some(Timestamp(1500)));
        let t = Timestamp::parse_rfc3339("2026-11-23T02:20:00Z").expect("time");
        assert_eq!(t.month_start().to_rfc3339(), "2026-11-01T00:00:00Z");
        assert_eq!(
            Timestamp::parse_rfc3339("2024-03-01T00:00:00Z").expect("t").month_start().to_rfc3339(),
            "2024-03-01T00:00:00Z"
        );
        for bad in ["", "2026-11-22", "2026-13-01T00:00:00Z", "2026-11-22T14:13:01", "2026-11-22T14:13:01.x5Z"] {
            assert_eq!(Timestamp::parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn rfc3339() {
        for (ms, expected) in [
            (0, "1970-01-01T00:00:00Z"),
            (999, "1970-01-01T00:00:00Z"),
            (951_782_400_000, "2000-02-29T00:00:00Z"),
            (1_795_356_781_000, "2026-11-22T14:13:01Z"),
            (-1000, "1969-12-31T23:59:59Z"),
            (253_402_300_799_000, "9999-12-31T23:59:59Z"),
        ] {
            assert_eq!(Timestamp(ms).to_rfc3339(), expected, "{ms}");
        }
    }
}
