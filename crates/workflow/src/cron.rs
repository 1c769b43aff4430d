//! `on.schedule` cron expressions: five fields (minute, hour, day of month, month, day of week),
//! POSIX syntax with `*`, lists, ranges, steps and month/day names, as GitHub accepts them.

use serde::{Deserialize, Serialize};

/// A parsed schedule: for each field, the set of values it allows (bit `n` set = value `n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub minutes: u64,
    pub hours: u32,
    pub days_of_month: u32,
    pub months: u16,
    pub days_of_week: u8,
    /// Whether day-of-month and day-of-week were both restricted (then either may match, as in cron).
    pub either_day: bool,
}

const FIELDS: [(&str, u32, u32, &[&str]); 5] = [
    ("minute", 0, 59, &[]),
    ("hour", 0, 23, &[]),
    ("day of month", 1, 31, &[]),
    ("month", 1, 12, &["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]),
    ("day of week", 0, 6, &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]),
];

impl Schedule {
    pub fn parse(expr: &str) -> Result<Schedule, String> {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "cron expression {expr:?} has {} fields; it needs 5: minute hour day-of-month month day-of-week",
                fields.len()
            ));
        }
        let mut sets = [0u64; 5];
        for (i, (field, (name, min, max, names))) in fields.iter().zip(FIELDS).enumerate() {
            sets[i] =
                parse_field(field, min, max, names).map_err(|why| format!("cron {name} field {field:?}: {why}"))?;
        }
        // The sets were built within each field's range, so they fit their types.
        Ok(Schedule {
            minutes: sets[0],
            hours: u32::try_from(sets[1]).unwrap_or(u32::MAX),
            days_of_month: u32::try_from(sets[2]).unwrap_or(u32::MAX),
            months: u16::try_from(sets[3]).unwrap_or(u16::MAX),
            days_of_week: u8::try_from(sets[4]).unwrap_or(u8::MAX),
            either_day: fields[2] != "*" && fields[4] != "*",
        })
    }

    /// Whether the schedule fires at this minute (UTC). `day_of_week` is 0 for Sunday.
    pub fn fires_at(&self, minute: u32, hour: u32, day_of_month: u32, month: u32, day_of_week: u32) -> bool {
        let bit = |set: u64, n: u32| n < 64 && set & (1 << n) != 0;
        let dom = bit(u64::from(self.days_of_month), day_of_month);
        let dow = bit(u64::from(self.days_of_week), day_of_week);
        let day = if self.either_day { dom || dow } else { dom && dow };
        bit(self.minutes, minute) && bit(u64::from(self.hours), hour) && bit(u64::from(self.months), month) && day
    }
}

fn parse_field(field: &str, min: u32, max: u32, names: &[&str]) -> Result<u64, String> {
    let value = |s: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(min + u32::try_from(i).unwrap_or(0));
        }
        let n: u32 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
        if n < min || n > max {
            return Err(format!("{n} is outside {min}-{max}"));
        }
        Ok(n)
    };
    let mut set = 0u64;
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step.parse().map_err(|_| format!("step {step:?} is not a number"))?;
                if step == 0 {
                    return Err("a step must be at least 1".to_owned());
                }
                (range, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = match range {
            "*" => (min, max),
            r => match r.split_once('-') {
                Some((a, b)) => (value(a)?, value(b)?),
                // `5/15` means from 5 to the end, every 15.
                None if step > 1 => (value(r)?, max),
                None => {
                    let v = value(r)?;
                    (v, v)
                }
            },
        };
        if lo > hi {
            return Err(format!("range {lo}-{hi} runs backwards"));
        }
        let mut v = lo;
        while v <= hi {
            set |= 1 << v;
            v += step;
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_schedules() {
        let s = Schedule::parse("*/15 9-17 * * MON-FRI").expect("valid");
        assert!(s.fires_at(30, 9, 1, 1, 1));
        assert!(!s.fires_at(31, 9, 1, 1, 1) && !s.fires_at(30, 8, 1, 1, 1) && !s.fires_at(30, 9, 1, 1, 0));
        let s = Schedule::parse("0 0 1,15 jan,jul *").expect("valid");
        assert!(s.fires_at(0, 0, 15, 7, 3) && !s.fires_at(0, 0, 15, 8, 3));
        // Both day fields restricted: either matches.
        let s = Schedule::parse("0 0 13 * 5").expect("valid");
        assert!(s.fires_at(0, 0, 13, 2, 2) && s.fires_at(0, 0, 3, 2, 5) && !s.fires_at(0, 0, 3, 2, 4));
        assert!(Schedule::parse("5/20 * * * *").expect("valid").fires_at(45, 0, 1, 1, 0));
    }

    #[test]
    fn invalid_schedules_say_why() {
        for (expr, needle) in [
            ("* * * *", "has 4 fields"),
            ("60 * * * *", "minute field \"60\": 60 is outside 0-59"),
            ("* 24 * * *", "hour"),
            ("* * 0 * *", "day of month"),
            ("* * * 13 *", "month"),
            ("* * * * 7", "day of week"),
            ("*/0 * * * *", "step must be at least 1"),
            ("5-1 * * * *", "runs backwards"),
            ("x * * * *", "not a number"),
            ("* * * FOO *", "not a number"),
        ] {
            let err = Schedule::parse(expr).expect_err(expr);
            assert!(err.contains(needle), "{expr}: {err}");
        }
    }
}
