//! UTC calendar periods for budgets: a period's name (the counter's id)
//! and when it ends (a refused caller's retry-after). Budgets reset at UTC
//! midnight and on the first of the month.

const DAY_MS: i64 = 86_400_000;

/// A day or a month, as budgets count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    /// `2026-12-01` or `2026-12`.
    pub name: String,
    pub ends_at_ms: i64,
}

pub fn day_of(now_ms: i64) -> Period {
    let days = now_ms.div_euclid(DAY_MS);
    let (year, month, day) = civil_from_days(days);
    Period {
        name: format!("{year:04}-{month:02}-{day:02}"),
        ends_at_ms: (days + 1) * DAY_MS,
    }
}

pub fn month_of(now_ms: i64) -> Period {
    let (year, month, _) = civil_from_days(now_ms.div_euclid(DAY_MS));
    let (next_year, next_month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    Period {
        name: format!("{year:04}-{month:02}"),
        ends_at_ms: days_from_civil(next_year, next_month, 1) * DAY_MS,
    }
}

/// Howard Hinnant's `civil_from_days`: (year, month, day) of a day count
/// since 1970-01-01 in the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The inverse: days since 1970-01-01 of a date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = year - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_months_are_named_and_end_at_utc_midnight() {
        // 2026-12-01T00:18:43Z
        let now_ms = 1_796_084_323_000;
        assert_eq!(
            day_of(now_ms),
            Period {
                name: "2026-12-01".to_string(),
                ends_at_ms: 1_796_169_600_000,
            }
        );
        // December ends on 2027-01-01T00:00:00Z.
        assert_eq!(
            month_of(now_ms),
            Period {
                name: "2026-12".to_string(),
                ends_at_ms: 1_798_761_600_000,
            }
        );
        // A leap day, and the month it ends.
        let leap_day_ms = days_from_civil(2028, 2, 29) * DAY_MS + 5;
        assert_eq!(day_of(leap_day_ms).name, "2028-02-29");
        assert_eq!(
            month_of(leap_day_ms).ends_at_ms,
            days_from_civil(2028, 3, 1) * DAY_MS
        );
        assert_eq!(day_of(0).name, "1970-01-01");
    }

    #[test]
    fn civil_dates_round_trip() {
        for days in (-800_000..800_000).step_by(997) {
            let (year, month, day) = civil_from_days(days);
            assert_eq!(days_from_civil(year, month, day), days);
        }
    }
}
