"""The brokerage's pure money decisions (seed 002 §8, §9; R-002-10/11, -33..37, -45, -51..67, -78..80).

Trial amounts and the allowance, the holds, the per-account amounts when the actual amount
differs from the designated total, and the double-entry legs under both settlement designs —
seed 002's worked example throughout (5,000 × 300 funded 1,000,000 / 300,000 / 210,500).
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.brokerage.allocation import FundingShortfall, allocate
from agents.brokerage.fees import DEFAULT_FEES, AllowancePolicy, FeeSchedule, hold_legs, trial_amounts
from agents.brokerage.ledger_legs import CompanyAccounts, CustomerAmount, Design, settlement_legs
from schemas.brokerage import FundingLeg, HoldLeg, LedgerLeg, MismatchRule, SettlementType, TrialAmounts
from schemas.trading import OrderType, Side

D = Decimal
KAMATA, OMORI, X_MRF = "kamata-bank", "omori-bank", "x-mrf"
WORKED_FUNDING = (
    FundingLeg(account=KAMATA, amount=D(1_000_000), priority=1),
    FundingLeg(account=OMORI, amount=D(300_000), priority=2),
    FundingLeg(account=X_MRF, amount=D(210_500), priority=3),
)
RULE_1, RULE_2, RULE_3 = (
    MismatchRule.PROTECT_HIGH_PRIORITY,
    MismatchRule.DEBIT_HIGH_PRIORITY_FIRST,
    MismatchRule.RECEIVE_HIGH_PRIORITY_FIRST,
)
LIMIT_300 = D(300)
AS_REQUIRED = AllowancePolicy()
ACCOUNTS = CompanyAccounts(
    clearing="x:clearing",
    commission="x:commission",
    tax="x:tax",
    im_account_at_sc="x:im-account",
    im_cash="im:cash",
    sc_account_at_im="im:x-account",
    im_fees="im:fees",
)


def trial(
    side: Side = Side.BUY,
    order_type: OrderType = OrderType.LIMIT,
    price: Decimal | None = LIMIT_300,
    quantity: int = 5_000,
    policy: AllowancePolicy = AS_REQUIRED,
    settlement_type: SettlementType = SettlementType.IMMEDIATE,
) -> TrialAmounts:
    return trial_amounts(side, order_type, price, quantity, D(300), DEFAULT_FEES, policy, settlement_type)


def amounts(*values: int) -> tuple[tuple[str, Decimal], ...]:
    return tuple((leg.account, D(value)) for leg, value in zip(WORKED_FUNDING, values, strict=True))


def legs(*rows: tuple[str, int, str]) -> tuple[LedgerLeg, ...]:
    return tuple(LedgerLeg(account=account, amount=D(amount), means=means) for account, amount, means in rows)


# --- trial amounts and the allowance (§9.1–§9.6) ------------------------------------------------


def test_r_002_11_the_worked_buy_costs_1_510_500() -> None:
    assert trial() == TrialAmounts(
        price=D(300),
        consideration=D(1_500_000),
        commission=D(10_000),
        consumption_tax=D(500),
        required=D(1_510_500),
        allowance=D(1_510_500),
    )


def test_r_002_35_a_regular_trade_holds_half_the_required_amount() -> None:
    assert trial(settlement_type=SettlementType.REGULAR).allowance == D(755_250)


def test_r_002_34_the_allowance_may_carry_a_cushion() -> None:
    assert trial(policy=AllowancePolicy(factor=D("1.5"))).allowance == D(2_265_750)


def test_a_fraction_of_a_yen_in_the_allowance_is_rounded_down() -> None:
    policy = AllowancePolicy(factor=D("1.5"), regular_share=D("0.5"))
    # 1,510,500 × 0.75 = 1,132,875 exactly; 1 share at 301 requires 1,351, and 1,351 × 0.75 = 1,013.25.
    assert trial(policy=policy, settlement_type=SettlementType.REGULAR).allowance == D(1_132_875)
    odd = trial(price=D(301), quantity=1, policy=policy, settlement_type=SettlementType.REGULAR)
    assert (odd.required, odd.allowance) == (D(301 + 1_000 + 50), D(1_013))


def test_r_002_36_a_market_buy_is_valued_at_the_upper_price_limit() -> None:
    market = trial(order_type=OrderType.MARKET, price=None)
    assert (market.price, market.consideration) == (D(380), D(1_900_000))
    assert (market.commission, market.consumption_tax) == (D(15_000), D(750))
    assert market.required == market.allowance == D(1_915_750)
    regular = trial(order_type=OrderType.MARKET, price=None, settlement_type=SettlementType.REGULAR)
    assert regular.allowance == D(957_875)


def test_a_market_sell_is_valued_at_the_lower_price_limit_and_needs_no_allowance() -> None:
    market = trial(side=Side.SELL, order_type=OrderType.MARKET, price=None)
    assert (market.price, market.consideration) == (D(220), D(1_100_000))
    assert (market.commission, market.consumption_tax) == (D(10_000), D(500))
    assert (market.required, market.allowance) == (D(1_089_500), D(0))


def test_a_sell_receives_the_consideration_less_commission_and_tax() -> None:
    sell = trial(side=Side.SELL)
    assert (sell.consideration, sell.required, sell.allowance) == (D(1_500_000), D(1_489_500), D(0))


def test_a_fractional_consideration_is_rounded_down() -> None:
    assert trial(price=D("300.5"), quantity=3).consideration == D(901)


@pytest.mark.parametrize(
    ("order_type", "price", "quantity"),
    [(OrderType.LIMIT, None, 100), (OrderType.MARKET, D(300), 100), (OrderType.LIMIT, D(300), 0)],
)
def test_an_order_without_a_coherent_price_or_quantity_is_refused(
    order_type: OrderType, price: Decimal | None, quantity: int
) -> None:
    with pytest.raises(ValueError):
        trial(order_type=order_type, price=price, quantity=quantity)


@pytest.mark.parametrize(
    ("consideration", "commission"),
    [
        (0, 0),
        (1, 1_000),
        (100_000, 1_000),
        (100_001, 2_000),
        (1_000_000, 7_000),
        (1_500_000, 10_000),
        (1_500_001, 15_000),
        (3_000_000, 15_000),
        (3_000_199, 15_000),  # 15,000.995 rounded down
        (3_000_200, 15_001),
        (10_000_000, 50_000),
    ],
)
def test_the_commission_table_bands_include_their_upper_bound(consideration: int, commission: int) -> None:
    assert DEFAULT_FEES.commission(D(consideration)) == D(commission)


def test_a_negative_consideration_has_no_commission() -> None:
    with pytest.raises(ValueError):
        DEFAULT_FEES.commission(D(-1))


def test_tax_and_the_intermediary_fee_are_shares_of_the_commission_rounded_down() -> None:
    assert DEFAULT_FEES.consumption_tax(D(10_000)) == D(500)
    assert DEFAULT_FEES.consumption_tax(D(1_010)) == D(50)
    assert DEFAULT_FEES.intermediary_fee(D(10_000)) == D(2_000)
    assert DEFAULT_FEES.intermediary_fee(D(1_003)) == D(200)


@pytest.mark.parametrize(
    "changes",
    [
        {"bands": ((D(200), D(2)), (D(100), D(3)))},
        {"bands": ((D(100), D(2)), (D(100), D(3)))},
        {"bands": ((D(0), D(2)),)},
        {"bands": ((D(100), D(0)),)},
        {"bands": ((D(100), D(3)), (D(200), D(2)))},
        {"above_rate": D("-0.01")},
        {"consumption_tax_rate": D("-0.05")},
        {"intermediary_share": D("1.2")},
    ],
)
def test_an_incoherent_fee_schedule_is_refused(changes: dict[str, object]) -> None:
    values: dict[str, object] = {"bands": ((D(100), D(1)),), "above_rate": D("0.01")} | changes
    with pytest.raises(ValueError):
        FeeSchedule(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(("factor", "share"), [(D(0), D("0.5")), (D(1), D(0)), (D(1), D("1.5"))])
def test_an_incoherent_allowance_policy_is_refused(factor: Decimal, share: Decimal) -> None:
    with pytest.raises(ValueError):
        AllowancePolicy(factor=factor, regular_share=share)


# --- holds (§9.7) --------------------------------------------------------------------------------


def test_the_full_allowance_is_held_as_designated() -> None:
    held = hold_legs(WORKED_FUNDING, D(1_510_500))
    assert held == tuple(HoldLeg(account=leg.account, amount=leg.amount) for leg in WORKED_FUNDING)


def test_half_the_allowance_is_held_in_proportion() -> None:
    assert [leg.amount for leg in hold_legs(WORKED_FUNDING, D(755_250))] == [D(500_000), D(150_000), D(105_250)]


def test_what_rounding_leaves_is_held_by_the_highest_priority() -> None:
    funding = (
        FundingLeg(account="low", amount=D(2), priority=5),
        FundingLeg(account="idle", amount=D(0), priority=1),
        FundingLeg(account="high", amount=D(1), priority=2),
    )
    assert hold_legs(funding, D(10)) == (HoldLeg(account="high", amount=D(4)), HoldLeg(account="low", amount=D(6)))


def test_nothing_to_hold_against_is_refused_and_nothing_held_needs_no_legs() -> None:
    idle = (FundingLeg(account="idle", amount=D(0), priority=1),)
    with pytest.raises(ValueError):
        hold_legs(idle, D(1))
    assert hold_legs(idle, D(0)) == ()
    with pytest.raises(ValueError):
        hold_legs(WORKED_FUNDING, D(-1))


def test_an_account_designated_twice_is_refused() -> None:
    with pytest.raises(ValueError):
        hold_legs((*WORKED_FUNDING, WORKED_FUNDING[0]), D(1))


# --- mismatch rules (§9.8) -----------------------------------------------------------------------

AMPLE = {KAMATA: D(2_000_000), OMORI: D(1_000_000), X_MRF: D(1_000_000)}


@pytest.mark.parametrize("rule", list(MismatchRule))
@pytest.mark.parametrize("side", list(Side))
def test_r_002_57_a_full_fill_settles_the_designated_amounts(side: Side, rule: MismatchRule) -> None:
    assert allocate(side, WORKED_FUNDING, D(1_510_500), rule, AMPLE) == amounts(1_000_000, 300_000, 210_500)


@pytest.mark.parametrize("rule", list(MismatchRule))
@pytest.mark.parametrize("side", list(Side))
def test_r_002_78_a_shortfall_reduces_the_lowest_priority_first(side: Side, rule: MismatchRule) -> None:
    assert allocate(side, WORKED_FUNDING, D(906_300), rule, {}) == amounts(906_300, 0, 0)
    assert allocate(side, WORKED_FUNDING, D(1_400_000), rule, {}) == amounts(1_000_000, 300_000, 100_000)
    assert allocate(side, WORKED_FUNDING, D(0), rule, {}) == amounts(0, 0, 0)


@pytest.mark.parametrize("rule", [RULE_2, RULE_3])
def test_rule_2_debits_a_buys_excess_from_the_highest_priority(rule: MismatchRule) -> None:
    assert allocate(Side.BUY, WORKED_FUNDING, D(1_561_000), rule, AMPLE) == amounts(1_050_500, 300_000, 210_500)


@pytest.mark.parametrize("rule", [RULE_2, RULE_3])
def test_rule_2_moves_on_to_the_next_priority_when_a_balance_runs_out(rule: MismatchRule) -> None:
    available = {KAMATA: D(1_020_000), OMORI: D(320_000), X_MRF: D(500_000)}
    assert allocate(Side.BUY, WORKED_FUNDING, D(1_561_000), rule, available) == amounts(1_020_000, 320_000, 221_000)


def test_rule_1_debits_a_buys_excess_from_the_lowest_priority() -> None:
    available = {KAMATA: D(2_000_000), OMORI: D(1_000_000), X_MRF: D(300_000)}
    assert allocate(Side.BUY, WORKED_FUNDING, D(1_561_000), RULE_1, available) == amounts(1_000_000, 300_000, 261_000)


def test_rule_1_spills_to_the_next_lowest_priority_when_a_balance_runs_out() -> None:
    available = {KAMATA: D(2_000_000), OMORI: D(310_000), X_MRF: D(230_000)}
    assert allocate(Side.BUY, WORKED_FUNDING, D(1_561_000), RULE_1, available) == amounts(1_021_000, 310_000, 230_000)


@pytest.mark.parametrize("rule", list(MismatchRule))
def test_a_buys_excess_beyond_every_balance_is_a_shortfall(rule: MismatchRule) -> None:
    available = {KAMATA: D(1_010_000), OMORI: D(300_000)}  # X MRF not reported: nothing beyond its designation
    with pytest.raises(FundingShortfall, match="40500") as raised:
        allocate(Side.BUY, WORKED_FUNDING, D(1_561_000), rule, available)
    assert raised.value.missing == D(40_500)
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize("rule", [RULE_2, RULE_3])
def test_rule_3_receives_a_sells_excess_in_the_highest_priority(rule: MismatchRule) -> None:
    assert allocate(Side.SELL, WORKED_FUNDING, D(1_550_500), rule, {}) == amounts(1_040_000, 300_000, 210_500)


def test_rule_1_receives_a_sells_excess_in_the_lowest_priority_without_limit() -> None:
    assert allocate(Side.SELL, WORKED_FUNDING, D(2_510_500), RULE_1, {}) == amounts(1_000_000, 300_000, 1_210_500)


def test_equal_priorities_keep_the_order_given() -> None:
    funding = (
        FundingLeg(account="second", amount=D(50), priority=2),
        FundingLeg(account="first-a", amount=D(100), priority=1),
        FundingLeg(account="first-b", amount=D(100), priority=1),
    )
    shortfall = allocate(Side.BUY, funding, D(120), RULE_1, {})
    assert shortfall == (("first-a", D(100)), ("first-b", D(20)), ("second", D(0)))
    excess = allocate(Side.SELL, funding, D(260), RULE_3, {})
    assert excess == (("first-a", D(110)), ("first-b", D(100)), ("second", D(50)))


def test_a_negative_actual_amount_or_a_sell_with_no_account_is_refused() -> None:
    with pytest.raises(ValueError):
        allocate(Side.BUY, WORKED_FUNDING, D(-1), RULE_1, AMPLE)
    with pytest.raises(ValueError):
        allocate(Side.SELL, (), D(1), RULE_3, {})
    with pytest.raises(FundingShortfall):
        allocate(Side.BUY, (), D(1), RULE_2, {})
    assert allocate(Side.BUY, (), D(0), RULE_2, {}) == ()


# --- ledger legs (§8) ----------------------------------------------------------------------------

BUY_SPLIT: tuple[CustomerAmount, ...] = (
    (KAMATA, D(1_000_000), True),
    (OMORI, D(300_000), True),
    (X_MRF, D(210_500), False),
)
SELL_SPLIT: tuple[CustomerAmount, ...] = ((KAMATA, D(1_000_000), True), (X_MRF, D(489_500), False))


def worked_legs(side: Side, split: tuple[CustomerAmount, ...], design: Design) -> tuple[LedgerLeg, ...]:
    return settlement_legs(side, split, ACCOUNTS, design, D(1_500_000), D(10_000), D(500), D(2_000))


def test_r_002_60_the_worked_buy_settles_through_the_intermediarys_account_at_the_company() -> None:
    assert worked_legs(Side.BUY, BUY_SPLIT, Design.SC_HOLDS_IM_ACCOUNT) == legs(
        (KAMATA, -1_000_000, "39"),
        (OMORI, -300_000, "39"),
        (X_MRF, -210_500, "22"),
        ("im:cash", 1_300_000, "im"),
        ("x:im-account", -1_298_000, "23"),
        ("x:clearing", 1_500_000, "sc"),
        ("x:commission", 8_000, "sc"),
        ("x:tax", 500, "sc"),
    )


def test_r_002_65_the_worked_buy_settles_through_the_companys_account_at_the_intermediary() -> None:
    assert worked_legs(Side.BUY, BUY_SPLIT, Design.IM_HOLDS_SC_ACCOUNT) == legs(
        (KAMATA, -1_000_000, "39"),
        (OMORI, -300_000, "39"),
        (X_MRF, -210_500, "22"),
        ("im:x-account", 1_298_000, "40"),
        ("im:fees", 2_000, "im"),
        ("x:clearing", 202_000, "sc"),
        ("x:commission", 8_000, "sc"),
        ("x:tax", 500, "sc"),
    )


def test_r_002_59_a_sell_credits_the_intermediarys_account_at_the_company() -> None:
    assert worked_legs(Side.SELL, SELL_SPLIT, Design.SC_HOLDS_IM_ACCOUNT) == legs(
        (KAMATA, 1_000_000, "39"),
        (X_MRF, 489_500, "22"),
        ("im:cash", -1_000_000, "im"),
        ("x:im-account", 1_002_000, "23"),
        ("x:clearing", -1_500_000, "sc"),
        ("x:commission", 8_000, "sc"),
        ("x:tax", 500, "sc"),
    )


def test_r_002_64_a_sell_debits_the_companys_account_at_the_intermediary() -> None:
    assert worked_legs(Side.SELL, SELL_SPLIT, Design.IM_HOLDS_SC_ACCOUNT) == legs(
        (KAMATA, 1_000_000, "39"),
        (X_MRF, 489_500, "22"),
        ("im:x-account", -1_002_000, "40"),
        ("im:fees", 2_000, "im"),
        ("x:clearing", -498_000, "sc"),
        ("x:commission", 8_000, "sc"),
        ("x:tax", 500, "sc"),
    )


def test_the_worked_order_from_screen_to_ledger() -> None:
    amounts_due = trial()
    split = allocate(Side.BUY, WORKED_FUNDING, amounts_due.required, RULE_2, AMPLE)
    customer = tuple((account, amount, account != X_MRF) for account, amount in split)
    fee = DEFAULT_FEES.intermediary_fee(amounts_due.commission)
    posted = settlement_legs(
        Side.BUY,
        customer,
        ACCOUNTS,
        Design.SC_HOLDS_IM_ACCOUNT,
        amounts_due.consideration,
        amounts_due.commission,
        amounts_due.consumption_tax,
        fee,
    )
    assert posted == worked_legs(Side.BUY, BUY_SPLIT, Design.SC_HOLDS_IM_ACCOUNT)


def test_legs_on_one_account_merge_and_zero_legs_are_dropped() -> None:
    customer: tuple[CustomerAmount, ...] = ((X_MRF, D(1_000_000), False), (X_MRF, D(510_500), False))
    assert worked_legs(Side.BUY, customer, Design.SC_HOLDS_IM_ACCOUNT) == legs(
        (X_MRF, -1_510_500, "22"),
        ("x:im-account", 2_000, "23"),
        ("x:clearing", 1_500_000, "sc"),
        ("x:commission", 8_000, "sc"),
        ("x:tax", 500, "sc"),
    )


def test_customer_amounts_that_do_not_settle_the_trade_are_refused() -> None:
    short = ((KAMATA, D(1_000_000), True), (X_MRF, D(210_500), False))
    with pytest.raises(ValueError, match="1210500"):
        worked_legs(Side.BUY, short, Design.SC_HOLDS_IM_ACCOUNT)
    with pytest.raises(ValueError):
        worked_legs(Side.SELL, BUY_SPLIT, Design.IM_HOLDS_SC_ACCOUNT)


def test_a_fee_above_the_commission_or_a_negative_amount_is_refused() -> None:
    with pytest.raises(ValueError):
        settlement_legs(
            Side.BUY, BUY_SPLIT, ACCOUNTS, Design.SC_HOLDS_IM_ACCOUNT, D(1_500_000), D(10_000), D(500), D(10_001)
        )
    negative = ((KAMATA, D(1_510_600), True), (X_MRF, D(-100), False))
    with pytest.raises(ValueError):
        worked_legs(Side.BUY, negative, Design.SC_HOLDS_IM_ACCOUNT)


def test_one_account_under_two_means_is_refused() -> None:
    customer = (("im:cash", D(1_510_500), True),)
    with pytest.raises(ValueError, match="means"):
        worked_legs(Side.BUY, customer, Design.SC_HOLDS_IM_ACCOUNT)


# --- properties ----------------------------------------------------------------------------------

yen = st.integers(min_value=0, max_value=5_000_000).map(D)


@st.composite
def fundings(draw: st.DrawFn) -> tuple[FundingLeg, ...]:
    count = draw(st.integers(min_value=1, max_value=5))
    return tuple(
        FundingLeg(account=f"acct-{index}", amount=draw(yen), priority=draw(st.integers(min_value=1, max_value=3)))
        for index in range(count)
    )


@given(
    side=st.sampled_from(Side),
    funding=fundings(),
    actual=yen,
    rule=st.sampled_from(MismatchRule),
    available=st.dictionaries(st.sampled_from([f"acct-{index}" for index in range(5)]), yen),
)
def test_allocation_settles_the_actual_amount_within_the_available_balances(
    side: Side, funding: tuple[FundingLeg, ...], actual: Decimal, rule: MismatchRule, available: dict[str, Decimal]
) -> None:
    designated = {leg.account: leg.amount for leg in funding}
    room = sum((max(available.get(account, D(0)), amount) for account, amount in designated.items()), D(0))
    try:
        split = allocate(side, funding, actual, rule, available)
    except FundingShortfall as shortfall:
        assert side is Side.BUY
        assert shortfall.missing == actual - room > 0
        return
    assert sum(amount for _, amount in split) == actual
    assert sorted(account for account, _ in split) == sorted(designated)
    priorities = {leg.account: leg.priority for leg in funding}
    assert [priorities[account] for account, _ in split] == sorted(priorities.values())
    for account, amount in split:
        assert amount >= 0
        if side is Side.BUY:
            assert amount <= max(designated[account], available.get(account, D(0)))
        if actual <= sum(designated.values()):
            assert amount <= designated[account]


@given(funding=fundings(), allowance=yen)
def test_holds_sum_to_the_allowance(funding: tuple[FundingLeg, ...], allowance: Decimal) -> None:
    if allowance > 0 and all(leg.amount == 0 for leg in funding):
        with pytest.raises(ValueError):
            hold_legs(funding, allowance)
        return
    held = hold_legs(funding, allowance)
    assert sum(leg.amount for leg in held) == allowance
    designated = {leg.account: leg.amount for leg in funding}
    assert all(designated[leg.account] > 0 for leg in held)


@st.composite
def settlements(draw: st.DrawFn) -> tuple[Side, tuple[CustomerAmount, ...], Decimal, Decimal, Decimal, Decimal]:
    side = draw(st.sampled_from(Side))
    commission = draw(st.integers(min_value=0, max_value=50_000))
    tax = draw(st.integers(min_value=0, max_value=5_000))
    fee = draw(st.integers(min_value=0, max_value=commission))
    consideration = draw(st.integers(min_value=commission + tax if side is Side.SELL else 0, max_value=10_000_000))
    total = consideration + commission + tax if side is Side.BUY else consideration - commission - tax
    cuts = sorted(draw(st.lists(st.integers(min_value=0, max_value=total), max_size=4)))
    parts = [upper - lower for lower, upper in zip([0, *cuts], [*cuts, total], strict=True)]
    customer = tuple((f"cust-{index}", D(part), draw(st.booleans())) for index, part in enumerate(parts))
    return side, customer, D(consideration), D(commission), D(tax), D(fee)


@given(settlement=settlements(), design=st.sampled_from(Design))
def test_settlement_legs_always_balance(
    settlement: tuple[Side, tuple[CustomerAmount, ...], Decimal, Decimal, Decimal, Decimal], design: Design
) -> None:
    side, customer, consideration, commission, tax, fee = settlement
    posted = settlement_legs(side, customer, ACCOUNTS, design, consideration, commission, tax, fee)
    assert sum(leg.amount for leg in posted) == 0
    assert all(leg.amount != 0 for leg in posted)
    assert len({leg.account for leg in posted}) == len(posted)
    sign = -1 if side is Side.BUY else 1
    for account, amount, at_im in customer:
        if amount:
            assert LedgerLeg(account=account, amount=sign * amount, means="39" if at_im else "22") in posted


def test_issue_11_a_brokered_hold_protects_what_the_mismatch_rule_will_debit_each_account() -> None:
    """Half the allowance held (regular settlement): the rule debits the priority-1 account first, so
    that is where the hold is — a pro-rata hold left it 255,250 short, and a withdrawal could take it."""
    from agents.brokerage.settling import hold_for

    held = hold_for(WORKED_FUNDING, D(755_250), RULE_1)
    assert [(leg.account, leg.amount) for leg in held] == [(WORKED_FUNDING[0].account, D(755_250))]
    whole = hold_for(WORKED_FUNDING, D(1_510_500), RULE_1)
    assert [leg.amount for leg in whole] == [D(1_000_000), D(300_000), D(210_500)]
    excess = hold_for(WORKED_FUNDING, D(1_600_000), RULE_2)  # rule 2: the excess on priority 1
    assert [leg.amount for leg in excess] == [D(1_089_500), D(300_000), D(210_500)]
