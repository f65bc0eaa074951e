"""Each ecosystem's ordering on its known-tricky cases, and order properties on generated ones."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from immutrail.scan.errors import VersionError
from immutrail.scan.versions import SCHEMES, SEMVER, VersionScheme, scheme_for


def ascending(scheme: VersionScheme, versions: list[str]) -> None:
    for a, b in itertools.pairwise(versions):
        assert scheme.compare(a, b) == -1, (a, b)
        assert scheme.compare(b, a) == 1, (b, a)


def test_pep440_dev_pre_post_local_epoch() -> None:
    ascending(
        SCHEMES["PyPI"],
        ["1.0.dev1", "1.0a1", "1.0b2", "1.0rc1", "1.0", "1.0+local.1", "1.0.post1", "1.1", "1!0.1"],
    )
    assert SCHEMES["PyPI"].compare("0.12.01", "0.12.1") == 0


def test_semver_prerelease_precedence_from_the_spec() -> None:
    ascending(
        SCHEMES["npm"],
        [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.10.0",
            "2.0.0",
        ],
    )
    assert SCHEMES["npm"].compare("v1.2.3+build.5", "=1.2.3") == 0  # build metadata ignored


def test_go_prefix_pseudo_versions_and_toolchain() -> None:
    go = SCHEMES["Go"]
    ascending(
        go,
        [
            "v0.0.0-20190101000000-abcdefabcdef",
            "v0.1.0",
            "v1.2.3-pre",
            "v1.2.3-pre.0.20210101000000-abcdefabcdef",
            "v1.2.3",
            "v1.2.4-0.20210101000000-abcdefabcdef",
            "v1.2.4",
        ],
    )
    assert go.compare("1.1.12", "v1.1.12") == 0
    assert go.compare("v2.0.0+incompatible", "2.0.0") == 0
    assert go.compare("go1.21rc2", "1.21.0-rc.2") == 0
    assert go.compare("1.21.0-0", "go1.21rc1") == -1


def test_dpkg_tilde_epochs_and_revisions() -> None:
    ascending(
        SCHEMES["Debian"],
        [
            "1.0~~",
            "1.0~rc1",
            "1.0",
            "1.0-1",
            "1.0-1+b1",
            "1.0a",
            "1.0+",
            "1.2.1-2.2+wheezy2",
            "1.2.1-2.2+wheezy3",
            "1.10",
            "1:0.1",
            "2:0.0.1",
        ],
    )
    debian = SCHEMES["Debian"]
    assert debian.compare("1.0", "1.0-0") == 0
    assert debian.compare("0:1.0", "1.0") == 0
    assert debian.compare("1.00", "1.0") == 0


# Maven's own test lists (ComparableVersionTest), in ascending order.
MAVEN_QUALIFIERS = [
    "1-alpha2snapshot", "1-alpha2", "1-alpha-123", "1-beta-2", "1-beta123", "1-m2", "1-m11",
    "1-rc", "1-cr2", "1-rc123", "1-SNAPSHOT", "1", "1-sp", "1-sp2", "1-sp123", "1-abc",
    "1-def", "1-pom-1", "1-1-snapshot", "1-1", "1-2", "1-123",
]  # fmt: skip
MAVEN_NUMBERS = [
    "2.0", "2-1", "2.0.a", "2.0.0.a", "2.0.2", "2.0.123", "2.1.0", "2.1-a", "2.1b", "2.1-c",
    "2.1-1", "2.1.0.1", "2.2", "2.123", "11.a2", "11.a11", "11.b2", "11.b11", "11.m2", "11.m11",
    "11", "11.a", "11b", "11c", "11m",
]  # fmt: skip


@pytest.mark.parametrize("order", [MAVEN_QUALIFIERS, MAVEN_NUMBERS])
def test_maven_comparable_version_lists(order: list[str]) -> None:
    ascending(SCHEMES["Maven"], order)


@pytest.mark.parametrize(
    "equal",
    [
        ["1", "1.0", "1.0.0", "1-0", "1.0-0", "1-ga", "1.0-final", "1-release", "1.0.0-GA"],
        ["1a", "1-a", "1.0-a", "1.0.0-a"],
        ["1cr", "1rc", "1-rc", "1.0-rc"],
        ["1m3", "1.0-milestone-3", "1-m3"],
    ],
)
def test_maven_equal_spellings(equal: list[str]) -> None:
    for other in equal[1:]:
        assert SCHEMES["Maven"].compare(equal[0], other) == 0, other


def test_maven_alpha_before_release_and_log4j_bounds() -> None:
    ascending(SCHEMES["Maven"], ["1.0-alpha", "1.0-beta", "1.0", "2.3.1", "2.4", "2.12.2"])
    ascending(SCHEMES["Maven"], ["2.5.10", "2.5.10.1", "2.5.11"])


@pytest.mark.parametrize(
    ("scheme", "text"),
    [
        ("PyPI", "not a version"),
        ("npm", "1.2"),
        ("npm", "01.2.3"),
        ("Go", "v1.2"),
        ("Debian", "a1.0"),
        ("Debian", "x:1.0"),
        ("Debian", "1.0-r_1"),
        ("Maven", "1.0 beta"),
        ("PyPI", ""),
        ("npm", "1" * 300),
    ],
)
def test_malformed_versions_are_refused_with_the_reason(scheme: str, text: str) -> None:
    with pytest.raises(VersionError) as caught:
        SCHEMES[scheme].parse(text)
    assert caught.value.scheme == scheme
    assert caught.value.reason


def test_scheme_for_ranges() -> None:
    assert scheme_for("Debian:12") is SCHEMES["Debian"]
    assert scheme_for("crates.io") is None
    assert scheme_for("PyPI", "GIT") is None
    assert scheme_for("crates.io", "SEMVER") is SEMVER
    assert scheme_for("Go", "SEMVER") is SCHEMES["Go"]


# -- properties on generated versions ------------------------------------------------------

_num = st.integers(0, 30).map(str)
_ident = st.one_of(_num, st.text("abcrz-", min_size=1, max_size=4).filter(lambda s: s[0] != "-"))
semver_versions = st.builds(
    lambda a, b, c, pre: f"{a}.{b}.{c}" + (f"-{'.'.join(pre)}" if pre else ""),
    _num,
    _num,
    _num,
    st.lists(_ident, max_size=3),
)
debian_versions = st.builds(
    lambda epoch, up, rev: (f"{epoch}:" if epoch else "") + up + (f"-{rev}" if rev else ""),
    st.sampled_from(["", "0", "1", "2"]),
    st.from_regex(r"[0-9][0-9a-z.+~]{0,6}", fullmatch=True),
    st.from_regex(r"[0-9a-z.+~]{0,4}", fullmatch=True),
)
# Qualifiers follow "-" only: Maven's own ComparableVersion is not transitive once a qualifier
# follows a "." ("1-alpha" < "1" < "1.sp" < "1-alpha"), and we follow Maven, not a total order.
maven_versions = st.from_regex(
    r"[0-9]{1,2}(\.[0-9]{1,2}){0,2}(-([0-9]{1,2}|alpha|beta|rc|sp|ga|foo|m1|a1)){0,2}",
    fullmatch=True,
)
pypi_versions = st.from_regex(
    r"[0-9]{1,2}(\.[0-9]{1,2}){0,2}((a|b|rc)[0-9])?(\.post[0-9])?(\.dev[0-9])?(\+[a-z0-9]{1,3})?",
    fullmatch=True,
)

CASES = [
    ("npm", semver_versions),
    ("Go", semver_versions),
    ("Debian", debian_versions),
    ("Maven", maven_versions),
    ("PyPI", pypi_versions),
]


@pytest.mark.parametrize(("name", "strategy"), CASES)
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_order_is_antisymmetric_and_transitive(name: str, strategy, data) -> None:  # type: ignore[no-untyped-def]
    scheme = SCHEMES[name]
    a, b, c = (data.draw(strategy) for _ in range(3))
    ab, ba = scheme.compare(a, b), scheme.compare(b, a)
    assert ab == -ba
    assert scheme.compare(a, a) == 0
    if ab <= 0 and scheme.compare(b, c) <= 0:
        assert scheme.compare(a, c) <= 0
    ordered = sorted([a, b, c], key=scheme.parse)
    for x, y in itertools.pairwise(ordered):
        assert scheme.compare(x, y) <= 0


def test_maven_is_followed_even_where_it_is_not_transitive() -> None:
    """Maven's ComparableVersion: a string item after "." sorts below a "-" sub-list."""
    maven = SCHEMES["Maven"]
    assert maven.compare("1-alpha", "1") < 0
    assert maven.compare("1", "1.sp") < 0
    assert maven.compare("1.sp", "1-alpha") < 0
