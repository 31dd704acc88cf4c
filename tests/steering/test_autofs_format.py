"""autofs maps read, edited and rendered without losing a byte, and linted as automount
5.1.8 reads them (the quirks below were measured against the real daemon)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nfs_failover.errors import ConfigError
from nfs_failover.steering.autofs_format import (
    USE_WEIGHT_ONLY,
    BadEntry,
    Blank,
    Comment,
    Host,
    Include,
    Location,
    MapEntry,
    MapValueError,
    decode_map,
    encode_map,
    parse_map,
    parse_master,
    preference_entry,
    render_entry,
    render_master_line,
)

DATA = Path(__file__).parent / "data"
SAMPLES = sorted(path.name for path in DATA.iterdir())
CLEAN_SAMPLES = [name for name in SAMPLES if name not in ("broken.misc", "seed-auto.master.pasted")]


def sample(name: str) -> str:
    return decode_map((DATA / name).read_bytes())


def parse_any(name: str, text: str) -> str:
    parsed = parse_master(text) if "master" in name else parse_map(text)
    return parsed.render()


def messages(text: str, *, master: bool = False) -> list[tuple[int, str]]:
    parsed = parse_master(text) if master else parse_map(text)
    return [(problem.line, problem.message) for problem in parsed.problems]


# -- byte-for-byte round trips -------------------------------------------------------------


@pytest.mark.parametrize("name", SAMPLES)
def test_every_sample_file_renders_back_byte_for_byte(name: str) -> None:
    text = sample(name)
    assert encode_map(decode_map(encode_map(text))) == (DATA / name).read_bytes()
    assert parse_any(name, text) == text


@pytest.mark.parametrize("name", SAMPLES)
@pytest.mark.parametrize(
    "variant",
    [
        lambda text: text.replace("\n", "\r\n"),
        lambda text: text.rstrip("\n"),
        lambda text: text.replace("\n", "\r\n").rstrip("\r\n"),
        lambda text: text.replace("\n", "  \t\n"),
    ],
    ids=["crlf", "no-final-newline", "crlf-no-final-newline", "trailing-blanks"],
)
def test_line_end_and_trailing_blank_variants_render_back_byte_for_byte(
    name: str, variant: Callable[[str], str]
) -> None:
    text = variant(sample(name))
    assert parse_any(name, text) == text


def test_bytes_that_are_not_utf8_survive_the_round_trip() -> None:
    data = b"caf\xe9 -rw server:/caf\xe9\n\xff\xfe\n"
    assert encode_map(parse_map(decode_map(data)).render()) == data


@settings(max_examples=400)
@given(
    st.text(
        alphabet=st.sampled_from(list(' \t\r\n\\"#+*-:/,()[]&$=ab1\u00a0')) | st.characters(),
        max_size=300,
    )
)
def test_any_text_renders_back_byte_for_byte_as_map_and_as_master(text: str) -> None:
    lines = text.count("\n") + 1
    for parsed in (parse_map(text), parse_master(text)):
        assert parsed.render() == text
        assert all(0 <= problem.line <= lines for problem in parsed.problems)
        assert [item.line for item in parsed.items] == sorted(item.line for item in parsed.items)


# -- the seed's files --------------------------------------------------------------------


def test_seed_master_line_reads_mount_point_map_and_expiry_timeout() -> None:
    master = parse_master(sample("seed-auto.master"))
    (entry,) = master.entries
    assert (entry.mount_point, entry.map_name, entry.map_type) == ("/misc", "/etc/auto.misc", None)
    assert entry.options == ("--timeout=10",)
    assert entry.timeout == 10
    assert master.problems == ()


def test_seed_map_entry_reads_both_replicas_in_list_order() -> None:
    (entry,) = parse_map(sample("seed-auto.misc")).entries
    assert entry.key == "crr"
    assert entry.options == ("fstype=nfs", "rw", "nosuid", "hard", "tcp", "timeo=60")
    assert entry.locations == (
        Location((Host("10.1.13.5"),), "/crr-site1"),
        Location((Host("10.2.13.5"),), "/crr-dest1"),
    )


def test_seed_master_line_pasted_from_the_article_is_flagged_for_its_no_break_spaces() -> None:
    master = parse_master(sample("seed-auto.master.pasted"))
    assert master.entries[0].mount_point == "/misc\u00a0\u00a0"  # what automount mounts on
    assert messages(sample("seed-auto.master.pasted"), master=True) == [
        (
            1,
            "line holds NO-BREAK SPACE (U+00A0), which autofs reads as part of a name, "
            "not as a blank",
        )
    ]


@pytest.mark.parametrize("name", CLEAN_SAMPLES)
def test_clean_samples_have_no_problems(name: str) -> None:
    text = sample(name)
    parsed = parse_master(text) if "master" in name else parse_map(text)
    assert parsed.problems == ()


def test_debian_default_master_holds_only_comments_and_two_includes() -> None:
    master = parse_master(sample("debian-auto.master"))
    assert master.entries == ()
    assert [(i.name, i.line) for i in master.includes] == [
        ("dir:/etc/auto.master.d", 22),
        ("auto.master", 38),
    ]
    assert {type(item) for item in master.items} == {Comment, Include}


def test_debian_default_misc_reads_its_cdrom_entry_between_comments() -> None:
    parsed = parse_map(sample("debian-auto.misc"))
    (entry,) = parsed.entries
    assert (entry.key, entry.line, entry.locations) == ("cd", 6, (Location((), "/dev/cdrom"),))
    assert entry.raw == "cd\t\t-fstype=iso9660,ro,nosuid,nodev\t:/dev/cdrom\n"
    assert sum(isinstance(item, Comment) for item in parsed.items) == 12


# -- reading the model -------------------------------------------------------------------


def site_entry(key: str) -> MapEntry:
    entry = parse_map(sample("site.misc")).entry(key)
    assert entry is not None
    return entry


@pytest.mark.parametrize(
    ("key", "locations"),
    [
        ("same-path", [(["host1", "host2", "host3"], [None, None, None], "/path/path")]),
        ("weighted", [(["az1"], [1], "/vol"), (["az2"], [2], "/vol")]),
        (
            "mixed",
            [(["host1", "host2"], [3, None], "/blah"), (["host3"], [5], "/some/other/path")],
        ),
        ("v6", [(["[fe80::1]"], [None], "/export"), (["[2001:db8::2]"], [2], "/export")]),
        ("long", [(["server1"], [None], "/export/long"), (["server2"], [None], "/export/long")]),
    ],
)
def test_replicated_forms_and_weights_become_hosts_in_the_order_written(
    key: str, locations: list[tuple[list[str], list[int | None], str]]
) -> None:
    entry = site_entry(key)
    assert [
        ([h.name for h in loc.hosts], [h.weight for h in loc.hosts], loc.path)
        for loc in entry.locations
    ] == locations


def test_continued_entry_is_one_entry_that_keeps_all_its_lines() -> None:
    entry = site_entry("long")
    assert entry.line == 14
    assert entry.raw == (
        "long\t\t-rw,hard,intr \\\n\t\t\tserver1:/export/long \\\n\t\t\tserver2:/export/long\n"
    )
    assert entry.options == ("rw", "hard", "intr")


@pytest.mark.parametrize("key", ["server", "multi2"])
def test_multi_mount_entries_are_recognised_and_kept_untouched(key: str) -> None:
    entry = site_entry(key)
    assert entry.multi_mount
    assert entry.locations == ()
    assert entry.raw in sample("site.misc")


def test_local_and_special_locations_have_no_hosts() -> None:
    assert site_entry("boot").locations == (Location((), "/dev/hda1"),)
    assert site_entry("windoze").locations == (Location((), "//windoze/c"),)


def test_quotes_are_taken_off_values_but_kept_in_the_text() -> None:
    entry = site_entry("quoted")
    assert entry.options == ("fstype=cifs", "credentials=/etc/creds")
    assert entry.locations == (Location((), "//win/share name"),)
    assert '"://win/share name"' in entry.raw


def test_wildcard_key_and_ampersand_are_kept_verbatim() -> None:
    entry = site_entry("*")
    assert entry.locations == (Location((Host("server"),), "/export/home/&"),)


def test_includes_and_tabs_and_trailing_blanks_are_kept() -> None:
    parsed = parse_map(sample("site.misc"))
    assert [(i.name, i.line, i.raw) for i in parsed.includes] == [
        ("auto.misc.local", 23, "+auto.misc.local\n")
    ]
    assert site_entry("trailing").raw == "trailing\t\t-rw\tserver:/trailing   \t\n"


def test_direct_map_is_recognised_from_its_absolute_keys() -> None:
    parsed = parse_map(sample("site.direct"))
    assert parsed.direct
    assert [e.key for e in parsed.entries] == [
        "/nfs/apps/mozilla",
        "/nfs/data/budgets",
        "/tst/sbin",
    ]
    assert not parse_map(sample("site.misc")).direct


def test_master_lines_read_types_formats_builtin_maps_and_options() -> None:
    master = parse_master(sample("site.master"))
    read = {
        e.mount_point: (e.map_type, e.map_format, e.map_name, e.options) for e in master.entries
    }
    assert read["/home"] == ("yp", None, "auto.home", ("nobrowse",))
    assert read["/-"] == (None, None, "/etc/auto.direct", ("-t=300",))
    assert read["/net"] == ("hosts", None, "-hosts", ("nosuid", "nodev"))
    assert read["/mnt/data"] == (
        "file",
        "sun",
        "/etc/auto.data",
        ("--ghost", "rw", "soft", "intr", "--random-multimount-selection"),
    )
    assert read["/old"][0] == "null"
    misc = master.entry("/misc")
    assert misc is not None
    assert (misc.timeout, misc.negative_timeout) == (60, 20)


# -- lint ----------------------------------------------------------------------------------


def test_broken_map_problems_name_their_lines() -> None:
    assert messages(sample("broken.misc")) == [
        (
            2,
            'bad map entry "spoiled": line 3 starts with a blank, so autofs reads it as part '
            'of this entry and ignores the entry (end the line before it with "\\" to continue '
            "the entry)",
        ),
        (4, '"lonely" has no location; autofs ignores the line'),
        (
            5,
            'key "sub/dir" holds "/", but an indirect map key is one path component; '
            "autofs ignores the entry",
        ),
        (6, 'entry "optsonly" has no location; autofs cannot mount it'),
        (7, 'a key that starts with "*" must be "*" alone; autofs ignores the line'),
        (8, 'location "serv!er:/x" has "!" in its host part'),
        (9, 'location "server:path" has no ":/" after its host'),
        (10, 'weight "x" of host "a" in "a(x),b(2:/p" is not a number'),
        (10, 'host "b(2" of location "a(x),b(2:/p" has unbalanced brackets'),
        (
            12,
            'the comment before line 12 ends with "\\", so autofs reads line 12 as part of '
            "the comment and ignores it",
        ),
        (
            14,
            "line 14 starts with a blank right after a comment, so autofs reads it as part of "
            "the comment and ignores it",
        ),
    ]


def test_spoiled_entries_are_not_entries_but_keep_their_lines() -> None:
    parsed = parse_map(sample("broken.misc"))
    bad = [item for item in parsed.items if isinstance(item, BadEntry)]
    assert [(b.key, b.line) for b in bad] == [
        ("spoiled", 2),
        ("lonely", 4),
        ("sub/dir", 5),
        ("*", 7),  # the daemon gives up on the key right after the "*"
    ]
    assert bad[0].raw == "spoiled\t-rw\tserver:/spoiled\n\t-hard\n"
    assert parsed.entry("spoiled") is None
    assert [e.key for e in parsed.entries] == [
        "good",
        "optsonly",
        "badhost",
        "nocolon",
        "weights",
        "last",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a server:/a\n   \nb server:/b\n", []),  # a line of blanks only spoils nothing
        (
            "lonely   \ngood server:/g\n",
            [
                (
                    1,
                    "line 1 holds a key with no location followed by blanks, so autofs 5.1.8 "
                    'runs it on into line 2 and reads the key "lonelygood"',
                )
            ],
        ),
        (
            "a -rw server:/a \\\r\n  server:/b\r\n",
            [
                (
                    1,
                    'bad map entry "a": line 2 starts with a blank, so autofs reads it as part '
                    'of this entry and ignores the entry (end the line before it with "\\" to '
                    "continue the entry)",
                ),
                (
                    1,
                    'line ends with "\\" before CR LF, which autofs does not read as a '
                    "continuation (save the file with LF line ends)",
                ),
            ],
        ),
        (
            "a server:/a\n+other.map\n+last.map",
            [(3, 'include "+last.map" ends the file without a line end; autofs ignores it')],
        ),
        (
            "a server:/a\n\t",
            [
                (
                    1,
                    'entry "a" ends the file with a "\\" or a line of blanks but no line end; '
                    "autofs drops it",
                )
            ],
        ),
        (
            "a server:/a\r\n  \r\nb server:/b\r\n",
            [
                (
                    1,
                    'bad map entry "a": line 2 starts with a blank, so autofs reads it as part '
                    'of this entry and ignores the entry (end the line before it with "\\" to '
                    "continue the entry)",
                )
            ],
        ),
        ('a "server:/a\n', [(1, 'unmatched " in the entry for "a"; autofs ignores it')]),
        (
            "+auto.other -rw\n",
            [(1, 'text after the included map "auto.other" is read as a separate entry ("-rw")')],
        ),
        (
            "k" * 256 + " server:/a\n",
            [(1, f'key "{"k" * 40}..." is longer than 255 bytes; autofs ignores the entry')],
        ),
        ("a ho st:/x\n", [(1, 'location "ho st:/x" has " " in its host part')]),
        (
            "/abs server:/a\nrel server:/b\n/abs2 server:/c\n",
            [(2, 'key "rel" of a direct map is not an absolute path; autofs ignores the entry')],
        ),
    ],
    ids=[
        "blank-indent",
        "run-on-key",
        "crlf-continuation",
        "last-include",
        "lost-entry",
        "crlf-blank-line",
        "quote",
        "include-options",
        "long-key",
        "space-in-host",
        "direct",
    ],
)
def test_map_quirks_of_the_daemon_are_reported_on_their_lines(
    text: str, expected: list[tuple[int, str]]
) -> None:
    assert messages(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/m /etc/auto.m --timeout 10 -n=3 nobrowse -w\n", []),
        ("/m /etc/auto.m\n", []),
        ("/m\n", [(1, '"/m" has no map; autofs ignores the line')]),
        (
            "relative /etc/auto.m\n",
            [(1, 'syntax error: mount point "relative" is not an absolute path')],
        ),
        (
            "/m foo:/etc/auto.m\n",
            [
                (
                    1,
                    'syntax error in the line for "/m": unknown map type "foo" (autofs 5.1.8 '
                    "may then also misread the entries after it in this file)",
                )
            ],
        ),
        (
            "/m /etc/auto.m rw,,soft\n",
            [
                (
                    1,
                    'syntax error in the line for "/m": empty option between commas (autofs '
                    "5.1.8 may then also misread the entries after it in this file)",
                )
            ],
        ),
        (
            "/m /etc/auto.m --timeout 10 20\n",
            [
                (
                    1,
                    'syntax error in the line for "/m": "20" is not an option (autofs 5.1.8 '
                    "may then also misread the entries after it in this file)",
                )
            ],
        ),
        (
            "/m /etc/auto.m --timeout\n",
            [
                (
                    1,
                    '"/m": --timeout needs a number of seconds: autofs 5.1.8 passes "timeout" '
                    "to mount instead and keeps its default",
                )
            ],
        ),
        (
            "/m /etc/auto.m --bogus\n",
            [(1, '"/m": unknown option "--bogus": autofs 5.1.8 passes "bogus" to mount')],
        ),
        (
            "/m /etc/auto.m\n/m /etc/auto.other\n",
            [(2, 'mount point "/m" is already served by line 1; autofs ignores this line')],
        ),
        ("/m -null\n/m /etc/auto.m\n", []),  # "-null" asks autofs to skip the next one
        ("/m /etc/auto\\:m\n", []),
        (
            "/m file:/etc/auto:m\n",
            [
                (
                    1,
                    'syntax error in the line for "/m": map name "/etc/auto:m" holds a ":" '
                    '(write it as "\\:") (autofs 5.1.8 may then also misread the entries '
                    "after it in this file)",
                )
            ],
        ),
        (
            "+auto.master --timeout 10\n",
            [
                (
                    1,
                    'text after the included map "auto.master" is read as a separate entry '
                    '("--timeout 10")',
                )
            ],
        ),
        (
            "/m /etc/auto.m\n   --timeout 10\n",
            [
                (
                    1,
                    'bad map entry "/m": line 2 starts with a blank, so autofs reads it as part '
                    'of this entry and ignores the entry (end the line before it with "\\" to '
                    "continue the entry)",
                )
            ],
        ),
    ],
    ids=[
        "clean",
        "no-options",
        "no-map",
        "relative",
        "unknown-type",
        "double-comma",
        "bare-number",
        "timeout-without-number",
        "unknown-long-option",
        "duplicate",
        "nulled",
        "escaped-colon",
        "colon-in-map-name",
        "include-options",
        "indented-options",
    ],
)
def test_master_lines_autofs_rejects_are_reported_on_their_lines(
    text: str, expected: list[tuple[int, str]]
) -> None:
    assert messages(text, master=True) == expected


# -- rendering ---------------------------------------------------------------------------


def test_render_entry_writes_options_and_replicated_locations() -> None:
    line = render_entry(
        "crr",
        ["fstype=nfs", "rw,nosuid", "hard"],
        [
            Location((Host("10.1.13.5"),), "/crr-site1"),
            Location((Host("h1", 1), Host("[fe80::1]", 2)), "/crr-dest1"),
            Location((), "/local/copy"),
        ],
    )
    assert line == (
        "crr -fstype=nfs,rw,nosuid,hard 10.1.13.5:/crr-site1 h1(1),[fe80::1](2):/crr-dest1 "
        ":/local/copy"
    )


def test_render_entry_writes_direct_map_keys() -> None:
    assert render_entry("/nfs/apps", [], [Location((Host("srv"),), "/apps")]) == (
        "/nfs/apps srv:/apps"
    )


def test_render_master_line_writes_the_seed_line() -> None:
    assert render_master_line("/misc", "/etc/auto.misc", ["--timeout=10"]) == (
        "/misc /etc/auto.misc --timeout=10"
    )
    assert render_master_line("/-", "/etc/auto.direct") == "/- /etc/auto.direct"


def loc(host: str = "srv", path: str = "/export", weight: int | None = None) -> list[Location]:
    return [Location((Host(host, weight),), path)]


@pytest.mark.parametrize(
    ("render", "message"),
    [
        (
            lambda: render_entry("a b", [], loc()),
            "key 'a b' holds whitespace or a control character",
        ),
        (
            lambda: render_entry("a\nb", [], loc()),
            "key 'a\\nb' holds whitespace or a control character",
        ),
        (
            lambda: render_entry("a\x00", [], loc()),
            "key 'a\\x00' holds whitespace or a control character",
        ),
        (lambda: render_entry("#a", [], loc()), "key '#a' holds '#'"),
        (lambda: render_entry('a"', [], loc()), "key 'a\"' holds '\"'"),
        (lambda: render_entry("a'", [], loc()), 'key "a\'" holds "\'"'),
        (lambda: render_entry("a\\", [], loc()), "key 'a\\\\' holds '\\\\'"),
        (lambda: render_entry("a&", [], loc()), "key 'a&' holds '&'"),
        (lambda: render_entry("$HOME", [], loc()), "key '$HOME' holds '$'"),
        (lambda: render_entry("a`id`", [], loc()), "key 'a`id`' holds '`'"),
        (lambda: render_entry("a;b", [], loc()), "key 'a;b' holds ';'"),
        (lambda: render_entry("a|b", [], loc()), "key 'a|b' holds '|'"),
        (lambda: render_entry("a<b", [], loc()), "key 'a<b' holds '<'"),
        (lambda: render_entry("a>b", [], loc()), "key 'a>b' holds '>'"),
        (lambda: render_entry("*", [], loc()), "key '*' holds '*'"),
        (lambda: render_entry("a?", [], loc()), "key 'a?' holds '?'"),
        (lambda: render_entry("-rw", [], loc()), "key '-rw' starts with '-'"),
        (lambda: render_entry("+map", [], loc()), "key '+map' starts with '+'"),
        (lambda: render_entry("", [], loc()), "key is empty"),
        (lambda: render_entry("..", [], loc()), "key '..' is not a directory name"),
        (
            lambda: render_entry("a/b", [], loc()),
            "key 'a/b' holds '/': an indirect map key is one path component",
        ),
        (
            lambda: render_entry("k" * 256, [], loc()),
            f"key {'k' * 40!r}... is longer than 255 bytes",
        ),
        (lambda: render_entry("a", [], []), 'entry "a": at least one location is needed'),
        (lambda: render_entry("a", ["rw hard"], loc()), "option 'rw hard' holds whitespace"),
        (lambda: render_entry("a", ["-rw"], loc()), "option '-rw' starts with '-'"),
        (lambda: render_entry("a", ["rw,-hard"], loc()), "option '-hard' starts with '-'"),
        (lambda: render_entry("a", ["rw,,hard"], loc()), "option 'rw,,hard' has an empty item"),
        (lambda: render_entry("a", ["rw#x"], loc()), "option 'rw#x' holds '#'"),
        (
            lambda: render_entry("a", ["sec=krb5:krb5i:krb5p"], loc()),
            "options 'sec=krb5:krb5i:krb5p' hold more than one ':'",
        ),
        (lambda: render_entry("a", [], loc("-oops")), "host '-oops' starts with '-'"),
        (lambda: render_entry("a", [], loc("srv 2")), "host 'srv 2' holds whitespace"),
        (lambda: render_entry("a", [], loc("srv,x")), "host 'srv,x': use letters, digits"),
        (lambda: render_entry("a", [], loc("fe80::1")), "host 'fe80::1': use letters, digits"),
        (lambda: render_entry("a", [], loc("srv(1)")), "host 'srv(1)': use letters, digits"),
        (lambda: render_entry("a", [], loc(weight=-1)), "weight -1 of host 'srv' is not"),
        (
            lambda: render_entry("a", [], loc(path="export")),
            "path 'export' is not an absolute path",
        ),
        (lambda: render_entry("a", [], loc(path="/ex port")), "path '/ex port' holds whitespace"),
        (lambda: render_entry("a", [], loc(path="/ex&")), "path '/ex&' holds '&'"),
        (lambda: render_entry("a", [], loc(path="/a:b")), "path '/a:b' holds a character maps"),
        (
            lambda: render_entry("a", [], loc(path="/a\nb c:/x")),
            "path '/a\\nb c:/x' holds whitespace",
        ),
        (
            lambda: render_entry("a", ["o=" + "x" * 16_400], loc()),
            'entry "a" is longer than 16384 bytes',
        ),
        (
            lambda: render_master_line("misc", "/etc/auto.misc"),
            "mount point 'misc' is not an absolute path",
        ),
        (
            lambda: render_master_line("/misc", "auto.misc"),
            "map path 'auto.misc' is not an absolute path",
        ),
        (
            lambda: render_master_line("/misc", "/etc/auto.misc", ["--timeout 10"]),
            "master option '--timeout 10' holds whitespace",
        ),
        (
            lambda: render_master_line("/misc", "/etc/auto.misc", ["rw,-x"]),
            "master option '-x' in 'rw,-x' starts with '-'",
        ),
        (
            lambda: render_master_line("/misc", "/etc/auto.misc", ["--timeout"]),
            "master options '--timeout': --timeout needs a number of seconds",
        ),
        (
            lambda: render_master_line("/misc", "/etc/auto.misc", ["--bogus"]),
            "master options '--bogus': unknown option \"--bogus\"",
        ),
    ],
)
def test_renderer_refuses_a_value_with_a_one_line_message_naming_it(
    render: Callable[[], str], message: str
) -> None:
    with pytest.raises(MapValueError) as refused:
        render()
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)


def test_refusal_is_a_config_error_so_the_cli_exits_2() -> None:
    with pytest.raises(ConfigError) as refused:
        render_entry("a b", [], loc())
    assert refused.value.problems == ["key 'a b' holds whitespace or a control character"]


def test_preference_entry_adds_use_weight_only_and_weights_increasing_with_position() -> None:
    line = preference_entry("crr", ["fstype=nfs", "rw", "hard"], [("az1", "/vol"), ("az2", "/vol")])
    assert line == "crr -fstype=nfs,rw,hard,use-weight-only az1(1):/vol az2(2):/vol"


def test_preference_entry_of_a_single_replica_has_no_weights() -> None:
    assert preference_entry("crr", ["rw"], [("az1", "/vol")]) == "crr -rw az1:/vol"


@pytest.mark.parametrize("option", ["use_weight_only", "use-weight-only", "no-use-weight-only"])
def test_preference_entry_refuses_weight_options_of_its_own(option: str) -> None:
    with pytest.raises(MapValueError, match=f'option "{option}" is set by the ordering itself'):
        preference_entry("crr", ["rw", option], [("az1", "/a"), ("az2", "/b")])


def test_preference_entry_refuses_a_replica_listed_twice_or_none() -> None:
    with pytest.raises(MapValueError, match='replica "az1:/a" is listed twice'):
        preference_entry("crr", [], [("az1", "/a"), ("az1", "/a")])
    with pytest.raises(MapValueError, match="at least one replica is needed"):
        preference_entry("crr", [], [])


# -- generated maps ----------------------------------------------------------------------

keys = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,15}", fullmatch=True).filter(
    lambda key: key not in (".", "..")
)
host_names = st.from_regex(r"[a-z][a-z0-9-]{0,8}(\.[a-z0-9-]{1,6}){0,2}", fullmatch=True) | (
    st.ip_addresses(v=6).map(lambda ip: f"[{ip}]")
)
paths = st.from_regex(r"(/[A-Za-z0-9._-]{1,8}){1,3}", fullmatch=True)
options = st.lists(st.from_regex(r"[a-z]{1,8}(=[a-z0-9.]{1,6})?", fullmatch=True), max_size=4)
hosts = st.builds(Host, host_names, st.none() | st.integers(0, 100))
locations = st.builds(Location, st.lists(hosts, max_size=3).map(tuple), paths)
entries = st.tuples(keys, options, st.lists(locations, min_size=1, max_size=3))


@st.composite
def map_files(draw: st.DrawFn) -> tuple[str, list[tuple[str, list[str], list[Location]]]]:
    wanted = draw(st.lists(entries, max_size=6, unique_by=lambda entry: entry[0]))
    crlf = draw(st.booleans())
    end = "\r\n" if crlf else "\n"
    text = ""
    # Blanks-only lines may follow an entry, but not with CR LF: the CR is no blank to autofs.
    separators = ["", f"# about the next entry{end}", end]
    if not crlf:
        separators.append("  \t\n")
    for key, opts, locs in wanted:
        text += draw(st.sampled_from(separators))
        line = render_entry(key, opts, locs)
        gap = draw(st.sampled_from([" ", "\t", "  \t ", "\t\t"]))
        if not crlf and draw(st.booleans()):
            gap = " \\\n\t"  # a continued line
        text += line.replace(" ", gap) + draw(st.sampled_from(["", "   ", "\t"])) + end
    if draw(st.booleans()):
        text = text.removesuffix(end)
    return text, wanted


@settings(max_examples=200)
@given(map_files())
def test_generated_maps_read_back_their_entries(
    generated: tuple[str, list[tuple[str, list[str], list[Location]]]],
) -> None:
    text, wanted = generated
    parsed = parse_map(text)
    assert parsed.render() == text
    assert parsed.problems == ()
    assert not any(isinstance(item, BadEntry) for item in parsed.items)
    assert [(e.key, list(e.options), list(e.locations)) for e in parsed.entries] == [
        (key, opts, [Location(tuple(loc.hosts), loc.path) for loc in locs])
        for key, opts, locs in wanted
    ]


odd_text = st.text(
    alphabet=st.sampled_from(list(" \t\n\r\\\"'#&$`;|<>*?,:()[]-/+=.a1")) | st.characters(),
    max_size=10,
)


@settings(max_examples=300)
@given(odd_text, st.lists(odd_text, max_size=2), odd_text, odd_text)
def test_render_entry_either_refuses_or_writes_a_line_that_reads_back_exactly(
    key: str, opts: list[str], host: str, path: str
) -> None:
    location = Location((Host(host, 1),), path)
    try:
        line = render_entry(key, opts, [location])
    except MapValueError:
        return
    assert "\n" not in line and "\r" not in line
    (entry,) = parse_map(line + "\n").entries
    assert (entry.key, entry.locations) == (key, (location,))
    assert entry.options == tuple(part for opt in opts for part in opt.split(","))


@settings(max_examples=100)
@given(st.lists(st.tuples(host_names, paths), min_size=2, max_size=5, unique=True), options)
def test_preference_entry_keeps_the_order_given_with_weights_one_two_three(
    replicas: list[tuple[str, str]], opts: list[str]
) -> None:
    (entry,) = parse_map(preference_entry("vol", opts, replicas) + "\n").entries
    assert entry.options == (*opts, USE_WEIGHT_ONLY)
    assert [(loc.hosts, loc.path) for loc in entry.locations] == [
        ((Host(host, weight),), path) for weight, (host, path) in enumerate(replicas, start=1)
    ]


# -- editing -----------------------------------------------------------------------------


def test_with_entry_replaces_only_that_entry_in_place() -> None:
    text = sample("site.misc")
    edited = parse_map(text).with_preference_entry(
        "crr",
        ["fstype=nfs", "rw", "hard"],
        [("10.2.13.5", "/crr-dest1"), ("10.1.13.5", "/crr-site1")],
    )
    before, after = text.split("\n"), edited.render().split("\n")
    changed = [n for n, (old, new) in enumerate(zip(before, after, strict=True), 1) if old != new]
    assert changed == [9]
    assert after[8] == (
        "crr -fstype=nfs,rw,hard,use-weight-only 10.2.13.5(1):/crr-dest1 10.1.13.5(2):/crr-site1"
    )
    assert edited.problems == ()


def test_first_entry_of_an_empty_map_may_be_direct() -> None:
    edited = parse_map("").with_entry("/nfs/apps", [], loc())
    assert edited.direct
    assert edited.render() == "/nfs/apps srv:/export\n"


def test_with_entry_appends_with_the_files_own_line_ends() -> None:
    crlf = "a server:/a\r\nb server:/b"  # CR LF, and no line end at the end
    edited = parse_map(crlf).with_entry("c", ["rw"], loc())
    assert edited.render() == "a server:/a\r\nb server:/b\r\nc -rw srv:/export\r\n"
    lf = parse_map("").with_entry("c", [], loc())
    assert lf.render() == "c srv:/export\n"


def test_with_entry_replaces_a_spoiled_entry_with_its_lines_and_drops_duplicates() -> None:
    text = "x server:/x\nspoiled -rw server:/old\n\t-hard\nspoiled server:/dup\ny server:/y\n"
    edited = parse_map(text).with_entry("spoiled", ["rw", "hard"], loc())
    assert edited.render() == "x server:/x\nspoiled -rw,hard srv:/export\ny server:/y\n"


def test_without_entry_removes_every_line_for_the_key() -> None:
    text = "a server:/a\nb server:/b\n# keep\nb server:/b2\n"
    assert parse_map(text).without_entry("b").render() == "a server:/a\n# keep\n"


def test_edit_that_would_not_take_effect_is_refused() -> None:
    # The daemon drops an entry followed by a last line of blanks without a line end.
    with pytest.raises(MapValueError, match='entry "k" would not take effect'):
        parse_map("k\n\t").with_entry("k", [], loc())


def test_master_with_entry_replaces_the_mount_points_line_and_keeps_the_rest() -> None:
    text = sample("site.master")
    edited = parse_master(text).with_entry("/misc", "/etc/auto.misc", ["--timeout=300"])
    assert edited.render() == text.replace(
        "/misc\t/etc/auto.misc\t--timeout=60 --negative-timeout 20",
        "/misc /etc/auto.misc --timeout=300",
    )
    added = edited.with_entry("/nfs", "/etc/auto.nfs")
    assert added.render().endswith("+auto.master\n/nfs /etc/auto.nfs\n")
    assert added.without_entry("/nfs").render() == edited.render()


@settings(max_examples=100)
@given(map_files(), entries)
def test_editing_a_generated_map_changes_only_the_edited_entry(
    generated: tuple[str, list[tuple[str, list[str], list[Location]]]],
    new: tuple[str, list[str], list[Location]],
) -> None:
    text, _ = generated
    parsed = parse_map(text)
    key, opts, locs = new
    edited = parsed.with_entry(key, opts, locs)
    kept = [item.raw for item in parsed.items if getattr(item, "key", None) != key]
    edited_raws = [item.raw for item in edited.items if getattr(item, "key", None) != key]
    assert [raw.rstrip("\r\n") for raw in edited_raws] == [raw.rstrip("\r\n") for raw in kept]
    entry = edited.entry(key)
    assert entry is not None
    assert entry.raw.rstrip("\r\n") == render_entry(key, opts, locs)
    assert not any(isinstance(item, Blank) and item.raw.strip() for item in edited.items)
