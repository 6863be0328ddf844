//! What the scrape source asks of a parsed scrape: signal selectors with
//! located errors, counter sums over matching series, histograms merged over
//! series, and reset-aware deltas between two scrapes.

use canaryd::sources::prom_text::{
    Family, Format, Limits, QueryError, Selector, counter_delta, histogram, histogram_delta, parse,
    sum,
};
use expect_test::{Expect, expect};

fn text(input: &str) -> Vec<Family> {
    parse(input, Format::PrometheusText, &Limits::default()).unwrap()
}

fn om(input: &str) -> Vec<Family> {
    parse(input, Format::OpenMetrics, &Limits::default()).unwrap()
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap()
}

fn check_selector(input: &str, expected: Expect) {
    let got = match Selector::parse(input) {
        Ok(s) => {
            let matchers: Vec<String> = s
                .matchers
                .iter()
                .map(|m| format!("{} {:?} {:?}", m.label, m.op, m.value))
                .collect();
            format!("{} [{}]", s.name, matchers.join("; "))
        }
        Err(e) => format!("error: {e}"),
    };
    expected.assert_eq(&got);
}

#[test]
fn selectors() {
    check_selector(
        "http_requests_total",
        expect![[r#"http_requests_total []"#]],
    );
    check_selector(
        r#"http_requests_total{code=~"5.."}"#,
        expect![[r#"http_requests_total [code RegexMatch "5.."]"#]],
    );
    check_selector(
        r#" job:rate:5m { a = "x" , b != 'y\'s' , c !~ `raw\d+`, d="q\"\\\n", } "#,
        expect![[
            r#"job:rate:5m [a Equal "x"; b NotEqual "y's"; c RegexNoMatch "raw\\d+"; d Equal "q\"\\\n"]"#
        ]],
    );
    check_selector("x{}", expect![[r#"x []"#]]);
    check_selector(
        "",
        expect![[r#"error: column 1: expected a metric name, found end of selector"#]],
    );
    check_selector(
        r#"x{code="5"#,
        expect!["error: column 8: unterminated string (no closing quote)"],
    );
    check_selector(
        r#"x{code=5}"#,
        expect![[r#"error: column 8: expected a quoted label value, found `5`"#]],
    );
    check_selector(
        r#"x{code=="5"}"#,
        expect![[r#"error: column 8: expected a quoted label value, found `=`"#]],
    );
    check_selector(
        r#"x{code~"5"}"#,
        expect![[r#"error: column 7: expected `=`, `!=`, `=~` or `!~`, found `~`"#]],
    );
    check_selector(
        r#"x{code=~"5(("}"#,
        expect![[r#"
            error: column 9: invalid regex: regex parse error:
                ^(?:5(()$
                     ^
            error: unclosed group"#]],
    );
    check_selector(
        r#"x{a="1" b="2"}"#,
        expect![[r#"error: column 9: expected `,` or `}`, found `b`"#]],
    );
    check_selector(
        r#"x{a="\q"}"#,
        expect![[r#"error: column 6: invalid escape (allowed: \\ \" \' \n \t \r), found `\`"#]],
    );
    check_selector(
        "x y",
        expect![[r#"error: column 3: expected end of selector, found `y`"#]],
    );
    check_selector(
        r#"x{ünïcode="1"}"#,
        expect![[r#"error: column 3: expected a label name or `}`, found `ü`"#]],
    );
}

const REQUESTS: &str = r#"# TYPE http_requests_total counter
http_requests_total{code="200",path="/a"} 100
http_requests_total{code="500",path="/a"} 7
http_requests_total{code="503",path="/b"} 3
http_requests_total{code="404",path="/b"} 11
http_requests_total{code="500"} 1
"#;

#[test]
fn sums_over_matching_series() {
    let f = text(REQUESTS);
    let total = |s: &str| {
        let r = sum(&f, &sel(s)).unwrap();
        (r.value, r.series)
    };
    assert_eq!(total("http_requests_total"), (122.0, 5));
    assert_eq!(total(r#"http_requests_total{code=~"5.."}"#), (11.0, 3));
    assert_eq!(total(r#"http_requests_total{code!~"5.."}"#), (111.0, 2));
    assert_eq!(total(r#"http_requests_total{code="500"}"#), (8.0, 2));
    assert_eq!(
        total(r#"http_requests_total{code!="500",path="/b"}"#),
        (14.0, 2)
    );
    // A missing label matches as empty, as in PromQL.
    assert_eq!(total(r#"http_requests_total{path=""}"#), (1.0, 1));
    // Regexes are anchored: "5" does not match "500".
    assert_eq!(total(r#"http_requests_total{code=~"5"}"#), (0.0, 0));
    // No such family: zero series, which the caller reads as no data.
    assert_eq!(total("nope_total"), (0.0, 0));
}

#[test]
fn openmetrics_counters_answer_to_both_names() {
    let f = om(
        "# TYPE req counter\nreq_total{a=\"1\"} 4\nreq_created{a=\"1\"} 1700000000\nreq_total{a=\"2\"} 6\n# EOF\n",
    );
    assert_eq!(sum(&f, &sel("req")).unwrap().value, 10.0);
    assert_eq!(sum(&f, &sel("req_total")).unwrap().value, 10.0);
    assert_eq!(sum(&f, &sel("req_total")).unwrap().series, 2);
}

#[test]
fn sum_refuses_what_does_not_add_up() {
    let f = text(
        "# TYPE lat histogram\nlat_bucket{le=\"+Inf\"} 1\nlat_sum 0.5\nlat_count 1\n# TYPE q summary\nq{quantile=\"0.5\"} 1\nq_count 3\n",
    );
    assert_eq!(sum(&f, &sel("lat_count")).unwrap().value, 1.0);
    assert_eq!(sum(&f, &sel("q_count")).unwrap().value, 3.0);
    let e = |s: &str| sum(&f, &sel(s)).unwrap_err().to_string();
    assert_eq!(
        e("lat_bucket"),
        "`lat_bucket` is a histogram family; use a histogram query, or its `_count`"
    );
    assert_eq!(
        e("q"),
        "`q` is a summary quantile; use its `_count` or `_sum`"
    );
    let nan = text("c_total{a=\"1\"} NaN\n");
    let err = sum(&nan, &sel("c_total")).unwrap_err();
    assert!(
        matches!(&err, QueryError::NotACount { series, value } if series == "c_total{a=\"1\"}" && value.is_nan())
    );
    assert_eq!(
        err.to_string(),
        "series c_total{a=\"1\"} has value NaN, which a counter cannot have"
    );
}

const LATENCY: &str = r#"# TYPE lat_seconds histogram
lat_seconds_bucket{arm="canary",pod="a",le="0.1"} 5
lat_seconds_bucket{arm="canary",pod="a",le="0.5"} 8
lat_seconds_bucket{arm="canary",pod="a",le="1"} 9
lat_seconds_bucket{arm="canary",pod="a",le="+Inf"} 10
lat_seconds_sum{arm="canary",pod="a"} 3
lat_seconds_count{arm="canary",pod="a"} 10
lat_seconds_bucket{arm="canary",pod="b",le="0.1"} 1
lat_seconds_bucket{arm="canary",pod="b",le="0.25"} 1
lat_seconds_bucket{arm="canary",pod="b",le="0.5"} 2
lat_seconds_bucket{arm="canary",pod="b",le="1.0"} 4
lat_seconds_bucket{arm="canary",pod="b",le="+Inf"} 4
lat_seconds_sum{arm="canary",pod="b"} 2
lat_seconds_count{arm="canary",pod="b"} 4
lat_seconds_bucket{arm="baseline",pod="c",le="0.1"} 100
lat_seconds_bucket{arm="baseline",pod="c",le="0.5"} 100
lat_seconds_bucket{arm="baseline",pod="c",le="1"} 100
lat_seconds_bucket{arm="baseline",pod="c",le="+Inf"} 100
lat_seconds_sum{arm="baseline",pod="c"} 1
lat_seconds_count{arm="baseline",pod="c"} 100
"#;

#[test]
fn histograms_merge_at_the_bounds_every_series_has() {
    let f = text(LATENCY);
    let inf = f64::INFINITY;
    // Pod b's extra 0.25 bound is dropped; "1" and "1.0" are the same bound.
    assert_eq!(
        histogram(&f, &sel(r#"lat_seconds{arm="canary"}"#)).unwrap(),
        vec![(0.1, 6), (0.5, 10), (1.0, 13), (inf, 14)]
    );
    assert_eq!(
        histogram(&f, &sel(r#"lat_seconds_bucket{pod="b"}"#)).unwrap(),
        vec![(0.1, 1), (0.25, 1), (0.5, 2), (1.0, 4), (inf, 4)]
    );
    assert_eq!(
        histogram(&f, &sel(r#"lat_seconds{arm="none"}"#)).unwrap(),
        vec![]
    );
    assert_eq!(histogram(&f, &sel("no_such_seconds")).unwrap(), vec![]);
}

#[test]
fn histograms_must_be_well_formed() {
    // The parser refuses a malformed histogram with the line and the rule
    // (text format 0.0.4 defines these), before any query sees it.
    let refused = |input: &str| {
        parse(input, Format::PrometheusText, &Limits::default())
            .unwrap_err()
            .to_string()
    };
    expect![[r#"line 3, column 21: histogram `h`: bucket le="+Inf" is 4, less than 5 at le="1" (buckets are cumulative: counts must not decrease)"#]]
        .assert_eq(&refused(
            "# TYPE h histogram\nh_bucket{le=\"1\"} 5\nh_bucket{le=\"+Inf\"} 4\n",
        ));
    expect![[r#"line 2, column 1: histogram `h`: no le="+Inf" bucket (each histogram point must end with one)"#]]
        .assert_eq(&refused("# TYPE h histogram\nh_bucket{le=\"1\"} 5\n"));
    expect![[r#"line 3, column 13: histogram `h`: bucket le="1.0" after le="1" (buckets must be in increasing le order)"#]]
        .assert_eq(&refused(
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"1.0\"} 1\nh_bucket{le=\"+Inf\"} 2\n",
        ));
    // What the parser allows and a histogram query cannot use.
    let e = |input: &str| histogram(&text(input), &sel("h")).unwrap_err().to_string();
    assert_eq!(
        e("# TYPE h histogram\nh_bucket{le=\"1\"} 1.5\nh_bucket{le=\"+Inf\"} 2\n"),
        "series h_bucket{le=\"1\"} has value 1.5, which a counter cannot have"
    );
    assert_eq!(
        e("# TYPE h gauge\nh 1\n"),
        "`h` is a gauge family; use a counter query"
    );
}

/// OpenMetrics allows several samples of one series with increasing
/// timestamps; a query reads the latest, for counters and histograms alike.
#[test]
fn a_series_with_several_timestamps_is_read_at_its_latest() {
    let families = om(concat!(
        "# TYPE c counter\n",
        "c_total{a=\"1\"} 5 100\n",
        "c_total{a=\"1\"} 7 101.5\n",
        "c_total{a=\"2\"} 1 100\n",
        "# TYPE h histogram\n",
        "h_bucket{le=\"1\"} 1 100\n",
        "h_bucket{le=\"+Inf\"} 2 100\n",
        "h_count 2 100\n",
        "h_sum 1.5 100\n",
        "h_bucket{le=\"1\"} 3 101\n",
        "h_bucket{le=\"+Inf\"} 5 101\n",
        "h_count 5 101\n",
        "h_sum 4 101\n",
        "# EOF\n",
    ));
    let total = sum(&families, &sel("c_total")).unwrap();
    assert_eq!((total.value, total.series), (8.0, 2));
    assert_eq!(
        histogram(&families, &sel("h")).unwrap(),
        vec![(1.0, 3), (f64::INFINITY, 5)]
    );
}

#[test]
fn counter_deltas_handle_resets_per_series() {
    let before = text(REQUESTS);
    let after = text(
        r#"# TYPE http_requests_total counter
http_requests_total{path="/a",code="200"} 150
http_requests_total{code="500",path="/a"} 2
http_requests_total{code="503",path="/b"} 3
http_requests_total{code="502",path="/b"} 4
"#,
    );
    let d = |s: &str| {
        let r = counter_delta(&before, &after, &sel(s)).unwrap();
        (r.value, r.series)
    };
    // 200: +50 (label order differs, same series); 500/a: reset, counts 2;
    // 503: +0; 502: new, counts from zero; 404 and the bare 500 vanished.
    assert_eq!(d("http_requests_total"), (56.0, 4));
    assert_eq!(d(r#"http_requests_total{code=~"5.."}"#), (6.0, 3));
    // A reset in one series is not hidden by growth in another.
    assert_eq!(d(r#"http_requests_total{path="/a"}"#), (52.0, 2));
    assert_eq!(d("nope_total"), (0.0, 0));
}

#[test]
fn histogram_deltas_reset_whole_series() {
    let before = text(LATENCY);
    let after = text(
        r#"# TYPE lat_seconds histogram
lat_seconds_bucket{arm="canary",pod="a",le="0.1"} 7
lat_seconds_bucket{arm="canary",pod="a",le="0.5"} 12
lat_seconds_bucket{arm="canary",pod="a",le="1"} 14
lat_seconds_bucket{arm="canary",pod="a",le="+Inf"} 15
lat_seconds_bucket{arm="canary",pod="b",le="0.1"} 3
lat_seconds_bucket{arm="canary",pod="b",le="0.25"} 3
lat_seconds_bucket{arm="canary",pod="b",le="0.5"} 3
lat_seconds_bucket{arm="canary",pod="b",le="1.0"} 3
lat_seconds_bucket{arm="canary",pod="b",le="+Inf"} 3
lat_seconds_bucket{arm="baseline",pod="c",le="0.1"} 100
lat_seconds_bucket{arm="baseline",pod="c",le="0.5"} 150
lat_seconds_bucket{arm="baseline",pod="c",le="1"} 150
lat_seconds_bucket{arm="baseline",pod="c",le="+Inf"} 150
"#,
    );
    let inf = f64::INFINITY;
    let d = |s: &str| histogram_delta(&before, &after, &sel(s)).unwrap();
    // Pod a grew by (2, 4, 5, 5). Pod b's +Inf went 4 -> 3: the whole series
    // reset, so its delta is its new counts (3, 3, 3, 3), not a mix of
    // differences and new values.
    assert_eq!(
        d(r#"lat_seconds{pod="a"}"#),
        vec![(0.1, 2), (0.5, 4), (1.0, 5), (inf, 5)]
    );
    assert_eq!(
        d(r#"lat_seconds{pod="b"}"#),
        vec![(0.1, 3), (0.25, 3), (0.5, 3), (1.0, 3), (inf, 3)]
    );
    assert_eq!(
        d(r#"lat_seconds{arm="canary"}"#),
        vec![(0.1, 5), (0.5, 7), (1.0, 8), (inf, 8)]
    );
    assert_eq!(
        d(r#"lat_seconds{arm="baseline"}"#),
        vec![(0.1, 0), (0.5, 50), (1.0, 50), (inf, 50)]
    );
}

#[test]
fn histogram_delta_sees_a_reset_that_left_every_cumulative_count_higher() {
    // (5, 10) -> (8, 10): cumulative counts did not drop, but the (0.1, +Inf]
    // bucket went from 5 to 2, which only a restart explains.
    let before = text("# TYPE h histogram\nh_bucket{le=\"0.1\"} 5\nh_bucket{le=\"+Inf\"} 10\n");
    let after = text("# TYPE h histogram\nh_bucket{le=\"0.1\"} 8\nh_bucket{le=\"+Inf\"} 10\n");
    assert_eq!(
        histogram_delta(&before, &after, &sel("h")).unwrap(),
        vec![(0.1, 8), (f64::INFINITY, 10)]
    );
}
