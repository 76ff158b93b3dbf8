//! Timestamps given on the command line: milliseconds since the epoch or
//! RFC 3339 (`2024-05-01T12:00:00Z`, `2024-05-01T14:00:00.250+02:00`,
//! `2024-05-01` for midnight UTC).

/// Milliseconds since the Unix epoch for `text`.
///
/// # Errors
///
/// A message that shows the accepted forms.
pub fn parse_timestamp_ms(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) {
        return text
            .parse()
            .map_err(|_| format!("timestamp {text:?} is too large"));
    }
    parse_rfc3339(text).ok_or_else(|| {
        format!(
            "{text:?} is not a timestamp; give milliseconds since the epoch (1714564800000) \
             or RFC 3339 (2024-05-01T12:00:00Z, 2024-05-01T14:00:00.250+02:00, 2024-05-01)"
        )
    })
}

fn parse_rfc3339(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = bytes.get(range)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    if bytes.get(4) != Some(&b'-') || bytes.get(7) != Some(&b'-') {
        return None;
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    if bytes.len() == 10 {
        return Some(days * 86_400_000);
    }
    if !matches!(bytes.get(10), Some(b'T' | b't' | b' ')) || bytes.get(13) != Some(&b':') {
        return None;
    }
    let (hour, minute) = (number(11..13)?, number(14..16)?);
    let mut position = 16;
    let mut second = 0;
    if bytes.get(position) == Some(&b':') {
        second = number(17..19)?;
        position = 19;
    }
    let mut millis = 0;
    if bytes.get(position) == Some(&b'.') {
        let digits = bytes[position + 1..]
            .iter()
            .take_while(|byte| byte.is_ascii_digit())
            .count();
        if digits == 0 {
            return None;
        }
        // Milliseconds: the first three digits, padded; finer digits are dropped.
        let fraction = &text[position + 1..position + 1 + digits.min(3)];
        millis = format!("{fraction:0<3}").parse().ok()?;
        position += 1 + digits;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let offset_minutes = match &text[position..] {
        "Z" | "z" => 0,
        zone if zone.len() == 6 && matches!(zone.as_bytes()[0], b'+' | b'-') => {
            let zone_hours = number(position + 1..position + 3)?;
            let zone_minutes = number(position + 4..position + 6)?;
            if zone.as_bytes()[3] != b':' || zone_hours > 23 || zone_minutes > 59 {
                return None;
            }
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            sign * (zone_hours * 60 + zone_minutes)
        }
        _ => return None,
    };
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1_000 + millis)
}

/// RFC 3339 in UTC with milliseconds, e.g. `2024-05-01T12:00:00.000Z`.
pub fn format_rfc3339(timestamp_ms: i64) -> String {
    let days = timestamp_ms.div_euclid(86_400_000);
    let in_day_ms = timestamp_ms.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day_ms / 3_600_000,
        in_day_ms / 60_000 % 60,
        in_day_ms / 1_000 % 60,
        in_day_ms % 1_000
    )
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_milliseconds_and_rfc3339() {
        assert_eq!(parse_timestamp_ms("1714564800000"), Ok(1_714_564_800_000));
        assert_eq!(
            parse_timestamp_ms("2024-05-01T12:00:00Z"),
            Ok(1_714_564_800_000)
        );
        assert_eq!(
            parse_timestamp_ms("2024-05-01t12:00:00z"),
            Ok(1_714_564_800_000)
        );
        assert_eq!(
            parse_timestamp_ms("2024-05-01 14:00:00+02:00"),
            Ok(1_714_564_800_000)
        );
        assert_eq!(
            parse_timestamp_ms("2024-05-01T11:30:00-00:30"),
            Ok(1_714_564_800_000)
        );
        assert_eq!(
            parse_timestamp_ms("2024-05-01T12:00:00.25Z"),
            Ok(1_714_564_800_250)
        );
        assert_eq!(
            parse_timestamp_ms("2024-05-01T12:00:00.123456Z"),
            Ok(1_714_564_800_123)
        );
        assert_eq!(
            parse_timestamp_ms("2024-05-01T12:00Z"),
            Ok(1_714_564_800_000)
        );
        assert_eq!(parse_timestamp_ms("2024-05-01"), Ok(1_714_521_600_000));
        assert_eq!(parse_timestamp_ms("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_timestamp_ms("2000-02-29T00:00:00Z"),
            Ok(951_782_400_000)
        );
    }

    #[test]
    fn refuses_what_is_not_a_timestamp() {
        for text in [
            "",
            "yesterday",
            "2024-05-01T12:00:00",
            "2024-13-01T00:00:00Z",
            "2023-02-29",
            "2024-05-01T24:00:00Z",
            "2024-05-01T12:00:00.Z",
            "2024-05-01T12:00:00+0200",
            "2024/05/01",
            "-5",
        ] {
            let error = parse_timestamp_ms(text).unwrap_err();
            assert!(error.contains("RFC 3339"), "{text}: {error}");
        }
    }

    #[test]
    fn formats_and_round_trips() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339(1_714_564_800_250),
            "2024-05-01T12:00:00.250Z"
        );
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59.999Z");
        for ms in [
            0,
            951_782_400_000,
            1_714_564_800_123,
            4_102_444_800_000,
            -86_400_000,
        ] {
            assert_eq!(parse_timestamp_ms(&format_rfc3339(ms)), Ok(ms));
        }
    }
}
