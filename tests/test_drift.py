"""The pure diff: what opens, resolves and changes, and what stays silent."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

from shared.core.changes import (
    PERIMETER_ASSOCIATION_CHANGED,
    PERIMETER_MODE_CHANGED,
    PERIMETER_RULES_CHANGED,
    Actor,
    Provenance,
    TargetKind,
    TransitionKind,
)
from shared.core.config import RulesConfig
from shared.core.drift import AccountDecision, account_state_of, decide_account, decide_profile, profile_state_of
from shared.core.evaluate import evaluate
from shared.core.model import AccessMode, AccessRule, PerimeterView, StorageAccountSnapshot, UnmanagedDisk

TODAY = date(2026, 11, 25)
SUB = "/subscriptions/6e1c6f2a-5b7d-4c8e-9f10-2a3b4c5d6e7f"
ACCOUNT = f"{SUB}/resourceGroups/rg-data/providers/Microsoft.Storage/storageAccounts/st1"
NSP = f"{SUB}/resourceGroups/rg-network/providers/Microsoft.Network/networkSecurityPerimeters/nsp1"
WHO = Provenance(event_ids=("e1",), actors=(Actor(upn="alice@contoso.com", client_ip="203.0.113.10"),))


def view(mode: AccessMode = AccessMode.ENFORCED, rules: tuple[AccessRule, ...] = (), version: int = 1) -> PerimeterView:
    return PerimeterView(
        configuration_name="guid.assoc1",
        perimeter_id=NSP,
        perimeter_guid="guid",
        location="eastus",
        association_name="assoc1",
        access_mode=mode,
        access_mode_raw=mode.value,
        profile_name="profile1",
        access_rules_version=version,
        access_rules=rules,
    )


def snapshot(**changes: object) -> StorageAccountSnapshot:
    base = StorageAccountSnapshot(
        id=ACCOUNT,
        name="st1",
        subscription_id="6e1c6f2a-5b7d-4c8e-9f10-2a3b4c5d6e7f",
        resource_group="rg-data",
        perimeters=(view(),),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def evaluated(snap: StorageAccountSnapshot):  # type: ignore[no-untyped-def]
    return evaluate(snap, RulesConfig(), TODAY)


def state(snap: StorageAccountSnapshot):  # type: ignore[no-untyped-def]
    return account_state_of(evaluated(snap), "2026-11-25T00:00:00+00:00")


def kinds(decision) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return sorted((t.kind.value, t.rule_id) for t in decision.transitions)


def test_nothing_changed_emits_nothing() -> None:
    snap = snapshot(is_sftp_enabled=True)
    decision = decide_account(state(snap), evaluated(snap), WHO, "t")
    assert decision.transitions == ()
    assert decision.new_state is not None and len(decision.new_state.findings) == 1


def test_new_finding_opens_with_provenance_and_resolves_later() -> None:
    before = state(snapshot())
    decision = decide_account(before, evaluated(snapshot(is_sftp_enabled=True)), WHO, "t")
    assert kinds(decision) == [("opened", "sftp-enabled")]
    opened = decision.transitions[0]
    assert opened.provenance.changed_by == "alice@contoso.com from 203.0.113.10"
    assert opened.severity == "high" and opened.resource_id == ACCOUNT and opened.perimeter_id == NSP
    assert decision.new_state is not None
    again = decide_account(decision.new_state, evaluated(snapshot()), WHO, "t")
    assert kinds(again) == [("resolved", "sftp-enabled")]
    assert again.transitions[0].summary.startswith("Resolved (no longer detected)")


def test_severity_change_of_same_finding_is_changed_not_reopened() -> None:
    from shared.core.model import BackupInstance

    operational = BackupInstance(
        "/x/backupInstances/bi1",
        "Microsoft.Storage/storageAccounts/blobServices",
        "p",
        "ProtectionConfigured",
        ("OperationalStore",),
    )
    vaulted = replace(operational, datastore_types=("OperationalStore", "VaultStore"))
    decision = decide_account(
        state(snapshot(backup_instances=(operational,))),
        evaluated(snapshot(backup_instances=(vaulted,))),
        WHO,
        "t",
    )
    assert kinds(decision) == [("changed", "azure-backup")]
    assert decision.transitions[0].before["severity"] == "low" and decision.transitions[0].after["severity"] == "high"


def test_partial_read_never_resolves() -> None:
    before = state(snapshot(is_sftp_enabled=True, file_shares=()))
    partial = snapshot(incomplete=("fileShares",))  # SFTP off, but a read failed
    decision = decide_account(before, evaluated(partial), WHO, "t")
    assert decision.transitions == ()
    assert decision.new_state is not None
    assert [f["rule"] for f in decision.new_state.findings] == ["sftp-enabled"]


def test_account_deleted_resolves_everything_and_keeps_only_a_tombstone() -> None:
    before = state(snapshot(is_sftp_enabled=True, is_nfs_v3_enabled=True))
    decision = decide_account(before, None, WHO, "t-deleted")
    assert kinds(decision) == [("resolved", "blob-nfsv3-enabled"), ("resolved", "sftp-enabled")]
    assert all("account deleted" in t.summary for t in decision.transitions)
    tombstone = decision.new_state
    assert tombstone is not None and tombstone.is_tombstone and tombstone.deleted_at == "t-deleted"
    assert (tombstone.findings, tombstone.associations, tombstone.referenced()[TargetKind.PERIMETER]) == ((), (), set())
    assert sorted(tombstone.occurrences.values()) == [1, 1]
    # Deleted again (a re-delivered delete event): nothing to say, nothing to rewrite.
    assert decide_account(tombstone, None, WHO, "later") == AccountDecision((), tombstone)
    # An account that never had a finding leaves nothing behind.
    assert decide_account(state(snapshot()), None, WHO, "t").new_state is None


def test_a_finding_that_comes_back_is_the_next_occurrence() -> None:
    on, off = evaluated(snapshot(is_sftp_enabled=True)), evaluated(snapshot())
    stored = decide_account(None, off, WHO, "t0").new_state
    seen: list[tuple[str, int]] = []
    keys = []
    for evaluation in (on, off, on, off, on):
        decision = decide_account(stored, evaluation, WHO, "t")
        seen += [(t.kind.value, t.occurrence) for t in decision.transitions]
        keys += [t.idempotency_key for t in decision.transitions]
        stored = decision.new_state
    assert seen == [("opened", 1), ("resolved", 1), ("opened", 2), ("resolved", 2), ("opened", 3)]
    assert len(set(keys)) == 5  # every transition is a new delivery
    assert stored is not None and list(stored.occurrences.values()) == [3]


def test_severity_change_carries_the_occurrence_of_its_opening() -> None:
    from shared.core.model import BackupInstance

    operational = BackupInstance(
        "/x/backupInstances/bi1",
        "Microsoft.Storage/storageAccounts/blobServices",
        "p",
        "ProtectionConfigured",
        ("OperationalStore",),
    )
    vaulted = replace(operational, datastore_types=("OperationalStore", "VaultStore"))
    low, high, none = (evaluated(snapshot(backup_instances=b)) for b in ((operational,), (vaulted,), ()))
    stored = decide_account(None, none, WHO, "t").new_state
    occurrences = []
    for evaluation in (low, none, low, high):
        decision = decide_account(stored, evaluation, WHO, "t")
        occurrences += [(t.kind.value, t.occurrence) for t in decision.transitions]
        stored = decision.new_state
    assert occurrences == [("opened", 1), ("resolved", 1), ("opened", 2), ("changed", 2)]


def test_a_recreated_account_continues_the_occurrences_of_the_deleted_one() -> None:
    first = decide_account(None, evaluated(snapshot(is_sftp_enabled=True)), WHO, "t1")
    assert [t.occurrence for t in first.transitions] == [1]
    tombstone = decide_account(first.new_state, None, WHO, "t2").new_state
    recreated = decide_account(tombstone, evaluated(snapshot(is_sftp_enabled=True)), WHO, "t3")
    # Its association is seen for the first time (a baseline, not drift); its finding is occurrence 2.
    assert [(t.kind.value, t.rule_id, t.occurrence) for t in recreated.transitions] == [("opened", "sftp-enabled", 2)]
    assert recreated.new_state is not None and not recreated.new_state.is_tombstone
    assert recreated.new_state.associations and recreated.new_state.deleted_at == ""
    assert recreated.transitions[0].idempotency_key != first.transitions[0].idempotency_key
    # A scoped evaluation (a VM change) that finds the account gone leaves the tombstone alone.
    assert decide_account(tombstone, None, WHO, "t4", rules=frozenset({"unmanaged-disk"})).new_state == tombstone


def test_state_stored_before_occurrences_existed_counts_its_open_findings_as_first() -> None:
    old = replace(state(snapshot(is_sftp_enabled=True)), occurrences={})  # what main wrote
    resolved = decide_account(old, evaluated(snapshot()), WHO, "t")
    assert [(t.kind.value, t.occurrence) for t in resolved.transitions] == [("resolved", 1)]
    reopened = decide_account(resolved.new_state, evaluated(snapshot(is_sftp_enabled=True)), WHO, "t")
    assert [(t.kind.value, t.occurrence) for t in reopened.transitions] == [("opened", 2)]


def test_repeated_access_mode_changes_are_new_occurrences() -> None:
    enforced, learning = snapshot(), snapshot(perimeters=(view(AccessMode.LEARNING),))
    stored = decide_account(None, evaluated(enforced), WHO, "t").new_state
    changes = []
    for snap in (learning, enforced, learning):
        decision = decide_account(stored, evaluated(snap), WHO, "t")
        changes += [t for t in decision.transitions if t.rule_id == PERIMETER_MODE_CHANGED]
        stored = decision.new_state
    assert [t.occurrence for t in changes] == [1, 2, 3]
    assert changes[0].after == changes[2].after and changes[0].idempotency_key != changes[2].idempotency_key


def test_first_sight_opens_findings_but_association_is_baseline() -> None:
    decision = decide_account(None, evaluated(snapshot(is_sftp_enabled=True)), WHO, "t")
    assert kinds(decision) == [("opened", "sftp-enabled")]


def test_access_mode_weakening_and_association_removal() -> None:
    before = state(snapshot())
    weakened = decide_account(before, evaluated(snapshot(perimeters=(view(AccessMode.LEARNING),))), WHO, "t")
    assert kinds(weakened) == [("changed", PERIMETER_MODE_CHANGED), ("opened", "association-not-enforced")]
    mode = next(t for t in weakened.transitions if t.rule_id == PERIMETER_MODE_CHANGED)
    assert "weakening" in mode.flags and mode.severity == "high"
    assert mode.before == {"accessMode": "Enforced"} and mode.after == {"accessMode": "Learning"}

    strengthened = decide_account(
        state(snapshot(perimeters=(view(AccessMode.AUDIT),))), evaluated(snapshot()), WHO, "t"
    )
    mode = next(t for t in strengthened.transitions if t.rule_id == PERIMETER_MODE_CHANGED)
    assert "weakening" not in mode.flags and mode.severity == "low"

    removed = decide_account(before, evaluated(snapshot(perimeters=())), WHO, "t")
    assoc = [t for t in removed.transitions if t.rule_id == PERIMETER_ASSOCIATION_CHANGED]
    assert len(assoc) == 1 and "removed" in assoc[0].flags and "weakening" in assoc[0].flags


def test_scoped_evaluation_carries_other_rules_and_their_references() -> None:
    disk = UnmanagedDisk(
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1",
        "os",
        "https://st1.blob.core.windows.net/vhds/os.vhd",
        True,
    )
    before = state(snapshot(unmanaged_disks=(disk,)))
    # A perimeter change is evaluated while the VM is already gone: not the perimeter's doing.
    decision = decide_account(before, evaluated(snapshot()), WHO, "t", rules=frozenset({"association-not-enforced"}))
    assert decision.transitions == ()
    assert decision.new_state is not None
    assert decision.new_state.vm_ids == before.vm_ids
    assert [f["rule"] for f in decision.new_state.findings] == ["unmanaged-disk"]
    # The VM's own event then resolves it.
    own = decide_account(
        decision.new_state,
        evaluated(snapshot()),
        WHO,
        "t",
        rules=frozenset({"unmanaged-disk"}),
        associations=False,
    )
    assert kinds(own) == [("resolved", "unmanaged-disk")]


def rule(name: str, *prefixes: str, **kw: object) -> AccessRule:
    return AccessRule(name=name, direction=str(kw.pop("direction", "Inbound")), address_prefixes=prefixes, **kw)  # type: ignore[arg-type]


def test_profile_first_sight_and_unchanged_version_are_silent() -> None:
    current = profile_state_of(view(rules=(rule("r1", "10.0.0.0/24"),)))
    assert decide_profile(None, current, ACCOUNT, WHO) == ()
    assert decide_profile(current, current, ACCOUNT, WHO) == ()


def test_profile_rule_added_removed_modified_with_flags() -> None:
    old = profile_state_of(
        view(
            rules=(rule("keep", "10.0.0.0/24"), rule("gone", "52.0.0.0/24"), rule("edit", "52.1.0.0/24")),
            version=3,
        )
    )
    new = profile_state_of(
        view(
            rules=(
                rule("keep", "10.0.0.0/24"),
                rule("edit", "52.1.0.0/24", "0.0.0.0/0"),
                AccessRule("subs", "Inbound", subscriptions=("/subscriptions/x",)),
                AccessRule("tag", "Inbound", service_tags=("DataFactory",)),
                AccessRule("out", "Outbound", fully_qualified_domain_names=("exfil.example.com",)),
            ),
            version=4,
        )
    )
    # One change of the profile is one transition (rule + perimeter profile), whatever it touched.
    (t,) = decide_profile(old, new, ACCOUNT, WHO)
    assert t.rule_id == PERIMETER_RULES_CHANGED and t.kind is TransitionKind.CHANGED
    assert t.key == f"{NSP.lower()}|profile1" and t.resource_id == NSP and t.occurrence == 4
    assert t.evidence["added"] == ["out", "subs", "tag"]
    assert t.evidence["removed"] == ["gone"] and t.evidence["modified"] == ["edit"]
    assert t.summary == (
        "5 access rules changed in profile 'profile1': 'edit' modified [public, broad]; "
        "'gone' removed; 'out' added [new-fqdn]; 'subs' added [subscription]; 'tag' added [service-tag]"
    )
    assert t.severity == "high"  # the worst of the rules changed (a broad public prefix)
    assert {"added", "removed", "modified", "broad", "subscription", "service-tag", "new-fqdn"} <= set(t.flags)
    assert t.before["edit.addressPrefixes"] == ["52.1.0.0/24"]
    assert t.after["edit.addressPrefixes"] == ["0.0.0.0/0", "52.1.0.0/24"]
    assert "gone.addressPrefixes" in t.before and not any(k.startswith("gone.") for k in t.after)
    assert not any(k.startswith("keep.") for k in (*t.before, *t.after))


def vhd(disk: str, vm: str = "vm1") -> UnmanagedDisk:
    return UnmanagedDisk(
        f"{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{vm}",
        disk,
        f"https://st1.blob.core.windows.net/vhds/{disk}.vhd",
        disk == "os",
    )


def test_three_vhds_are_one_finding_and_one_opening() -> None:
    decision = decide_account(
        state(snapshot()), evaluated(snapshot(unmanaged_disks=(vhd("os"), vhd("d0"), vhd("d1")))), WHO, "t"
    )
    (opened,) = decision.transitions
    assert (opened.kind, opened.rule_id, opened.occurrence) == (TransitionKind.OPENED, "unmanaged-disk", 1)
    assert opened.key == f"unmanaged-disk|{ACCOUNT.lower()}|"
    assert [i["subject"] for i in opened.evidence["items"]] == ["vm1/d0", "vm1/d1", "vm1/os"]
    (stored,) = decision.new_state.findings  # type: ignore[union-attr]
    assert stored["key"] == opened.key and len(stored["evidence"]) == 3


def test_a_change_of_evidence_is_a_changed_transition_saying_what_was_added_and_removed() -> None:
    three = state(snapshot(unmanaged_disks=(vhd("os"), vhd("d0"), vhd("d1"))))
    other = snapshot(unmanaged_disks=(vhd("os"), vhd("d1"), vhd("d2", "vm2")))
    decision = decide_account(three, evaluated(other), WHO, "t")
    (changed,) = decision.transitions
    assert changed.kind is TransitionKind.CHANGED and changed.occurrence == 1  # the same opening
    assert changed.before["evidence"] == ["vm1/d0", "vm1/d1", "vm1/os"]
    assert changed.after["evidence"] == ["vm1/d1", "vm1/os", "vm2/d2"]
    assert (changed.evidence["added"], changed.evidence["removed"]) == (["vm2/d2"], ["vm1/d0"])
    assert changed.summary.endswith("(evidence added 'vm2/d2'; removed 'vm1/d0')")
    assert changed.summary.startswith("VMs 'vm1', 'vm2' keep 3 disks as VHDs in this account")
    # The same evidence again: nothing; the last disk gone: resolved, still occurrence 1.
    assert decide_account(decision.new_state, evaluated(other), WHO, "t").transitions == ()
    (resolved,) = decide_account(decision.new_state, evaluated(snapshot()), WHO, "t").transitions
    assert (resolved.kind, resolved.occurrence, resolved.key) == (TransitionKind.RESOLVED, 1, changed.key)


def test_a_modified_evidence_item_is_a_change_too() -> None:
    before = state(snapshot(unmanaged_disks=(vhd("os"),)))
    moved = replace(vhd("os"), vhd_uri="https://st1.blob.core.windows.net/other/os.vhd")
    (changed,) = decide_account(before, evaluated(snapshot(unmanaged_disks=(moved,))), WHO, "t").transitions
    assert changed.kind is TransitionKind.CHANGED and changed.after["modified"] == ["vm1/os"]
    assert changed.summary.endswith("(evidence modified 'vm1/os')")


def test_idempotency_key_is_stable_and_distinguishes_transitions() -> None:
    before = state(snapshot())
    a = decide_account(before, evaluated(snapshot(is_sftp_enabled=True)), WHO, "t1").transitions[0]
    b = decide_account(
        before, evaluated(snapshot(is_sftp_enabled=True)), Provenance(event_ids=("e2",)), "t2"
    ).transitions[0]
    assert a.idempotency_key == b.idempotency_key
    resolved = decide_account(state(snapshot(is_sftp_enabled=True)), evaluated(snapshot()), WHO, "t").transitions[0]
    assert resolved.idempotency_key != a.idempotency_key
    assert replace(a, occurrence=2).idempotency_key != a.idempotency_key  # a recurrence is a new delivery


def test_profile_rule_added_again_after_removal_is_a_new_occurrence() -> None:
    empty, with_rule = (), (rule("partner", "52.0.0.0/24"),)
    v1, v2, v3 = (profile_state_of(view(rules=r, version=n)) for r, n in ((empty, 1), (with_rule, 2), (empty, 3)))
    v4 = profile_state_of(view(rules=with_rule, version=4))
    (added,) = decide_profile(v1, v2, ACCOUNT, WHO)
    (again,) = decide_profile(v3, v4, ACCOUNT, WHO)
    assert (added.occurrence, again.occurrence) == (2, 4) and added.after == again.after
    assert added.idempotency_key != again.idempotency_key
    assert decide_profile(v1, v2, ACCOUNT, Provenance(source="sweep"))[0].idempotency_key == added.idempotency_key
