//! The `Date` response header value (RFC 9110 §5.6.7 IMF-fixdate), cached.
//!
//! Every response carries a Date, so formatting must not allocate; and the
//! value only changes once a second, so a worker keeps one `HttpDate`, calls
//! [`HttpDate::refresh`] once per event-loop turn, and copies the bytes.

use std::time::{SystemTime, UNIX_EPOCH};

const DAYS: [&[u8; 3]; 7] = [b"Sun", b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat"];
const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// Length of "Sun, 06 Nov 1994 08:49:37 GMT".
const LEN: usize = 29;

/// A cached IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
#[derive(Debug, Clone)]
pub struct HttpDate {
    buf: [u8; LEN],
    /// Unix second the buffer holds; `u64::MAX` means "never formatted".
    secs: u64,
}

impl HttpDate {
    /// A date formatted from the current clock.
    pub fn new() -> Self {
        let mut date = HttpDate {
            buf: [b' '; LEN],
            secs: u64::MAX,
        };
        date.refresh(SystemTime::now());
        date
    }

    /// Reformat if `now` is in a different second than the cached value.
    /// A clock before 1970 is clamped to the epoch rather than panicking.
    pub fn refresh(&mut self, now: SystemTime) {
        let secs = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if secs != self.secs {
            self.secs = secs;
            format_into(&mut self.buf, secs);
        }
    }

    /// The formatted value, without CRLF.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }
}

impl Default for HttpDate {
    fn default() -> Self {
        Self::new()
    }
}

fn format_into(buf: &mut [u8; LEN], secs: u64) {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday.
    let weekday = ((days + 4) % 7) as usize;
    // Four digits is all IMF-fixdate has room for; clamp instead of overflowing.
    let year = year.min(9999);

    buf[0..3].copy_from_slice(DAYS[weekday]);
    buf[3..5].copy_from_slice(b", ");
    two_digits(&mut buf[5..7], day);
    buf[7] = b' ';
    buf[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    buf[11] = b' ';
    two_digits(&mut buf[12..14], year / 100);
    two_digits(&mut buf[14..16], year % 100);
    buf[16] = b' ';
    two_digits(&mut buf[17..19], rem / 3600);
    buf[19] = b':';
    two_digits(&mut buf[20..22], rem / 60 % 60);
    buf[22] = b':';
    two_digits(&mut buf[23..25], rem % 60);
    buf[25..29].copy_from_slice(b" GMT");
}

fn two_digits(out: &mut [u8], n: u64) {
    out[0] = b'0' + (n / 10 % 10) as u8;
    out[1] = b'0' + (n % 10) as u8;
}

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31) in the proleptic
/// Gregorian calendar. This is Howard Hinnant's `civil_from_days`, restricted
/// to non-negative day counts: shift the epoch to 0000-03-01 so leap days fall
/// at the end of a year, then split into 400-year eras of 146097 days.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097; // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1st
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> HttpDate {
        let mut d = HttpDate::new();
        d.refresh(UNIX_EPOCH + Duration::from_secs(secs));
        d
    }

    #[test]
    fn known_timestamps() {
        let cases: &[(u64, &str)] = &[
            // The example from RFC 9110 §5.6.7.
            (784_111_777, "Sun, 06 Nov 1994 08:49:37 GMT"),
            // The epoch itself (a Thursday).
            (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
            // A leap day in a year divisible by 400.
            (951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT"),
            // A leap day in an ordinary leap year, last second of the day.
            (1_709_251_199, "Thu, 29 Feb 2024 23:59:59 GMT"),
            // The day after a leap day.
            (1_709_251_200, "Fri, 01 Mar 2024 00:00:00 GMT"),
            // 2100 is not a leap year: Feb 28 is followed by Mar 1.
            (4_107_542_400, "Mon, 01 Mar 2100 00:00:00 GMT"),
            // End of a year.
            (1_735_689_599, "Tue, 31 Dec 2024 23:59:59 GMT"),
            // Past the 32-bit rollover.
            (2_147_483_648, "Tue, 19 Jan 2038 03:14:08 GMT"),
        ];
        for &(secs, want) in cases {
            assert_eq!(
                std::str::from_utf8(at(secs).as_bytes()).unwrap(),
                want,
                "{secs}"
            );
        }
    }

    #[test]
    fn refresh_only_reformats_on_a_new_second() {
        let mut d = at(0);
        // Same second, later sub-second: unchanged.
        d.refresh(UNIX_EPOCH + Duration::from_millis(999));
        assert_eq!(d.as_bytes(), b"Thu, 01 Jan 1970 00:00:00 GMT");
        d.refresh(UNIX_EPOCH + Duration::from_secs(1));
        assert_eq!(d.as_bytes(), b"Thu, 01 Jan 1970 00:00:01 GMT");
    }

    #[test]
    fn clock_before_epoch_is_clamped() {
        let mut d = at(5);
        d.refresh(UNIX_EPOCH - Duration::from_secs(10));
        assert_eq!(d.as_bytes(), b"Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn civil_from_days_round_trips_every_day_for_800_years() {
        // Walk day by day and check the calendar advances exactly as it should.
        let (mut y, mut m, mut d) = (1970, 1, 1);
        for days in 0..(800 * 366) {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let month_len = match m {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > month_len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }
}
