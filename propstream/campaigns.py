"""Campaign audiences with a deterministic holdout, measured uplift, and segments as of a past time.

``propstream segment --campaign NAME`` records who was selected in
``campaign_members``: score and model at selection, the as-of time of the
scores (``selected_at``), and a holdout flag. The flag is a stable hash of
the campaign (its salt) and the customer, compared with the holdout share: it
never changes for a customer within a campaign (whatever the run, the model
version or the score), and two campaigns hold out independent sets (the
unsalted ``cityHash64(user_id) % 10`` of old left the same 10 % out of every
campaign).

``propstream uplift --campaign NAME`` reads the events archive: a member
converts with a purchase (``train.label_types``) of an item of the campaign's
group within the window after its ``selected_at``. It compares targeted with
held-out members (difference of proportions, Newcombe's interval from
statsmodels) and shows the conversion the scores predicted (their mean;
comparable when the window equals the models' label horizon).

>>> holdout_flag("spring-coffee", "1234", 0.1), holdout_flag("spring-coffee", "1234", 0.1)
(False, False)
>>> sum(holdout_flag("c", str(u), 0.5) for u in range(1000))
494
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.errors import PropstreamError
from schemas.settings import Settings
from schemas.tables import CAMPAIGN_MEMBERS, EVENTS, SCORE_HISTORY, SCORES


class CampaignError(PropstreamError):
    """A campaign command cannot be done as asked (unknown campaign or group, a bad window)."""


def holdout_flag(campaign: str, user_id: str, share: float) -> bool:
    """Whether ``user_id`` is held out of ``campaign``: BLAKE2b of (campaign, customer) as a uniform number < share."""
    digest = hashlib.blake2b(f"{campaign}\x1f{user_id}".encode(), digest_size=8, person=b"ps-holdout").digest()
    return int.from_bytes(digest, "big") / 2.0**64 < share


def parse_window(text: str) -> timedelta:
    """A window such as ``30d`` or ``12h``.

    >>> parse_window("30d"), parse_window("12h")
    (datetime.timedelta(days=30), datetime.timedelta(seconds=43200))
    """
    m = re.fullmatch(r"([1-9][0-9]*)([dh])", text)
    if not m:
        msg = f"window {text!r} is not a number of days or hours such as 30d or 12h"
        raise CampaignError(msg)
    n = int(m.group(1))
    return timedelta(days=n) if m.group(2) == "d" else timedelta(hours=n)


def _group_scores_exist(client: Any, db: str, group: str) -> None:
    known = [g for (g,) in client.query(f"SELECT DISTINCT group_id FROM {SCORES.at(db)} ORDER BY group_id").result_rows]
    if group not in known:
        msg = f"no scores for group {group!r}; groups with scores: {', '.join(known) or 'none yet'}"
        raise CampaignError(msg)


def select(
    client: Any, db: str, group: str, min_score: float | None, top: int | None, as_of: datetime | None = None
) -> list[tuple[str, float, int, datetime]]:
    """(user, score, model version, as_of) of a group's segment, best first: current scores or those at ``as_of``.

    At ``as_of``: each customer's last score of the group at or before it in
    ``score_history`` (argMax by as_of, then version), as a segment run then
    would have answered.
    """
    where = "" if min_score is None else " WHERE s >= {min_score:Float64}"
    limit = "" if top is None else " LIMIT {top:UInt64}"
    params: dict[str, Any] = {"group": group, "min_score": min_score, "top": top}
    if as_of is None:
        source = (
            f"SELECT user_id, score AS s, model_version AS mv, as_of AS at FROM {SCORES.at(db)} FINAL "
            "WHERE group_id = {group:String}"
        )
    else:
        params["at"] = int(as_of.timestamp() * 1000)
        source = (
            "SELECT user_id, argMax(score, (as_of, version)) AS s, "
            "argMax(model_version, (as_of, version)) AS mv, max(as_of) AS at "
            f"FROM {SCORE_HISTORY.at(db)} FINAL WHERE group_id = {{group:String}} "
            "AND as_of <= fromUnixTimestamp64Milli({at:Int64}, 'UTC') GROUP BY user_id"
        )
    rows = client.query(
        f"SELECT user_id, s, mv, at FROM ({source}){where} ORDER BY s DESC, user_id{limit}",
        parameters={k: v for k, v in params.items() if v is not None},
    ).result_rows
    if not rows:
        _group_scores_exist(client, db, group)
    return rows


@dataclass(frozen=True)
class CampaignAudience:
    """What `segment --campaign` recorded."""

    campaign: str
    group: str
    selected_at: datetime
    members: list[tuple[str, float, int, bool]]  # user, score, model version, holdout

    @property
    def held_out(self) -> int:
        """Members held out (not to be targeted)."""
        return sum(1 for m in self.members if m[3])


def record_campaign(
    settings: Settings,
    campaign: str,
    group: str,
    min_score: float | None,
    top: int | None,
    as_of: datetime | None = None,
) -> CampaignAudience:
    """Select a group's segment and record it as ``campaign``'s audience with holdout flags.

    ``selected_at`` is ``as_of``, else the newest as-of of the group's scores
    (the stream's clock: event time on a replay). Running a campaign again adds
    new members and re-records old ones; a customer's flag is the same.
    """
    from propstream.app import client_for

    if not campaign.strip():
        msg = "a campaign needs a name (--campaign NAME)"
        raise CampaignError(msg)
    client = client_for(settings)
    db = settings.clickhouse.database
    earlier = client.query(
        f"SELECT DISTINCT group_id, holdout_share FROM {CAMPAIGN_MEMBERS.at(db)} FINAL WHERE campaign = {{c:String}}",
        parameters={"c": campaign},
    ).result_rows
    share = settings.campaigns.holdout_share
    if earlier and earlier[0][0] != group:
        msg = f"campaign {campaign!r} targets group {earlier[0][0]!r}, not {group!r}: give the campaign another name"
        raise CampaignError(msg)
    if earlier and earlier[0][1] != share:  # another share would move customers in or out of the holdout
        msg = f"campaign {campaign!r} holds out {earlier[0][1]:g} of its audience, not {share:g}: keep --holdout"
        raise CampaignError(msg)
    rows = select(client, db, group, min_score, top, as_of)
    at = as_of or max((a for *_, a in rows), default=datetime.now(tz=UTC))
    members = [(u, float(s), int(v), holdout_flag(campaign, u, share)) for u, s, v, _ in rows]
    how = f"min_score={min_score}" if min_score is not None else f"top={top}"
    how += f" as_of={as_of.isoformat()}" if as_of else ""
    now = datetime.now(tz=UTC)
    if members:
        client.insert(
            CAMPAIGN_MEMBERS.at(db),
            [[campaign, u, group, s, v, h, share, at, how, now] for u, s, v, h in members],
            column_names=list(CAMPAIGN_MEMBERS.inserted),
        )
    return CampaignAudience(campaign, group, at, members)


@dataclass(frozen=True)
class Arm:
    """Targeted or held-out members: how many, how many converted, what the scores predicted."""

    members: int
    converted: int
    expected: float  # mean score at selection

    @property
    def rate(self) -> float:
        """Observed conversion (NaN without members)."""
        return self.converted / self.members if self.members else float("nan")


@dataclass(frozen=True)
class Uplift:
    """Targeted vs holdout conversion of one campaign, with an interval on the difference."""

    campaign: str
    group: str
    window: str
    targeted: Arm
    holdout: Arm
    uplift: float  # targeted rate - holdout rate
    low: float
    high: float
    confidence: float
    p_value: float


def measure_uplift(settings: Settings, campaign: str, window: str | None = None) -> Uplift:
    """Conversion in the campaign's group within ``window`` of selection, targeted vs held out, from the archive."""
    import numpy as np
    from statsmodels.stats.proportion import confint_proportions_2indep, test_proportions_2indep

    from propstream.app import client_for, load_catalog

    window = window or settings.campaigns.uplift_window
    span = parse_window(window)
    client = client_for(settings)
    db = settings.clickhouse.database
    members = client.query(
        f"SELECT user_id, group_id, score, holdout, toUnixTimestamp64Milli(selected_at) "
        f"FROM {CAMPAIGN_MEMBERS.at(db)} FINAL WHERE campaign = {{c:String}}",
        parameters={"c": campaign},
    ).result_rows
    if not members:
        known = client.query(f"SELECT DISTINCT campaign FROM {CAMPAIGN_MEMBERS.at(db)} ORDER BY campaign").result_rows
        msg = f"no campaign {campaign!r}; recorded campaigns: {', '.join(c for (c,) in known) or 'none yet'}"
        raise CampaignError(msg)
    group = members[0][1]
    items = load_catalog(settings).items_of(group)
    span_ms = int(span.total_seconds() * 1000)
    start = min(m[4] for m in members)
    bought = client.query(
        f"SELECT user_id, groupArray(toUnixTimestamp64Milli(ts)) FROM {EVENTS.at(db)} FINAL "
        "WHERE type IN {types:Array(String)} AND item_id IN {items:Array(String)} "
        "AND ts > fromUnixTimestamp64Milli({start:Int64}, 'UTC') "
        f"AND user_id IN (SELECT user_id FROM {CAMPAIGN_MEMBERS.at(db)} FINAL WHERE campaign = {{c:String}}) "
        "GROUP BY user_id",
        parameters={
            "types": list(settings.train.label_types),
            "items": items,
            "start": start,
            "c": campaign,
        },
    ).result_rows
    times = {u: np.asarray(ts) for u, ts in bought}
    arms: dict[bool, list[tuple[bool, float]]] = {False: [], True: []}
    for user, _, score, holdout, at in members:
        ts = times.get(user)
        converted = ts is not None and bool(((ts > at) & (ts <= at + span_ms)).any())
        arms[bool(holdout)].append((converted, float(score)))

    def arm(rows: list[tuple[bool, float]]) -> Arm:
        return Arm(len(rows), sum(c for c, _ in rows), float(np.mean([s for _, s in rows])) if rows else float("nan"))

    t, h = arm(arms[False]), arm(arms[True])
    conf = settings.campaigns.confidence
    if not t.members or not h.members:
        msg = f"campaign {campaign!r} has {t.members} targeted and {h.members} held-out members: uplift needs both"
        raise CampaignError(msg)
    low, high = confint_proportions_2indep(
        t.converted, t.members, h.converted, h.members, method="newcomb", compare="diff", alpha=1 - conf
    )
    p = test_proportions_2indep(t.converted, t.members, h.converted, h.members, compare="diff").pvalue
    return Uplift(campaign, group, window, t, h, t.rate - h.rate, float(low), float(high), conf, float(p))
