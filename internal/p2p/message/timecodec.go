package message

import "time"

// The envelope's sent_at is an RFC 3339 time (DESIGN.md section 7). Every
// message this node sends carries a UTC time, which these functions write
// and read in a fraction of the time of time.Time's text methods, which
// handle any layout and zone. They produce exactly what AppendText writes
// for a UTC time, and accept only what UnmarshalJSON accepts with the value
// it gives (TestUTCTimeCodec, FuzzDecodeFrame); anything else is left to
// those methods.

// appendUTC appends t, which must be in UTC, as AppendText does
// (2006-01-02T15:04:05.999999999Z). ok is false for a year outside
// 0..9999, which AppendText refuses.
func appendUTC(dst []byte, t time.Time) (_ []byte, ok bool) {
	y, mo, d := t.Date()
	if y < 0 || y > 9999 {
		return dst, false
	}
	h, mi, s := t.Clock()
	dst = append(dst,
		byte('0'+y/1000), byte('0'+y/100%10), byte('0'+y/10%10), byte('0'+y%10), '-',
		byte('0'+mo/10), byte('0'+mo%10), '-',
		byte('0'+d/10), byte('0'+d%10), 'T',
		byte('0'+h/10), byte('0'+h%10), ':',
		byte('0'+mi/10), byte('0'+mi%10), ':',
		byte('0'+s/10), byte('0'+s%10))
	if ns := t.Nanosecond(); ns != 0 {
		var frac [10]byte
		frac[0] = '.'
		for i := 9; i > 0; i-- {
			frac[i] = byte('0' + ns%10)
			ns /= 10
		}
		n := 10
		for frac[n-1] == '0' {
			n--
		}
		dst = append(dst, frac[:n]...)
	}
	return append(dst, 'Z'), true
}

// parseUTC parses a quoted time as appendUTC writes it: four-digit year,
// 'T', one to nine fraction digits, 'Z'. ok is false for anything else,
// including an impossible date, which the caller leaves to UnmarshalJSON.
func parseUTC(q []byte) (_ time.Time, ok bool) {
	const base = len(`"2006-01-02T15:04:05Z"`)
	if len(q) < base || q[0] != '"' || q[len(q)-1] != '"' || q[len(q)-2] != 'Z' {
		return time.Time{}, false
	}
	b := q[1 : len(q)-2] // 2006-01-02T15:04:05[.fffffffff]
	if b[4] != '-' || b[7] != '-' || b[10] != 'T' || b[13] != ':' || b[16] != ':' {
		return time.Time{}, false
	}
	y, ok1 := digits(b[0:4])
	mo, ok2 := digits(b[5:7])
	d, ok3 := digits(b[8:10])
	h, ok4 := digits(b[11:13])
	mi, ok5 := digits(b[14:16])
	s, ok6 := digits(b[17:19])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) ||
		mo < 1 || mo > 12 || d < 1 || d > daysIn(mo, y) || h > 23 || mi > 59 || s > 59 {
		return time.Time{}, false
	}
	ns := 0
	if frac := b[19:]; len(frac) > 0 {
		if len(frac) < 2 || len(frac) > 10 || frac[0] != '.' {
			return time.Time{}, false
		}
		f, ok := digits(frac[1:])
		if !ok {
			return time.Time{}, false
		}
		ns = f
		for range 10 - len(frac) {
			ns *= 10
		}
	}
	return time.Date(y, time.Month(mo), d, h, mi, s, ns, time.UTC), true
}

// digits returns the value of b, which must be all decimal digits.
func digits(b []byte) (int, bool) {
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// daysIn returns the number of days of month mo (1-12) of year y.
func daysIn(mo, y int) int {
	switch mo {
	case 2:
		if y%4 == 0 && (y%100 != 0 || y%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}
