"""Timer trigger: the reconciliation sweep (everything in scope, plus lost windows)."""

from __future__ import annotations

import azure.functions as func

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions leaves it untyped


@bp.function_name("reconcile_sweep")
@bp.timer_trigger(arg_name="timer", schedule="%NSP_DRIFT_SWEEP_SCHEDULE%", run_on_startup=False, use_monitor=True)
def reconcile_sweep(timer: func.TimerRequest) -> None:
    """Frequent and cheap: Resource Graph lists the accounts, their VMs with VHDs and blob backups;
    only accounts where one of those changed are read."""
    from shared.entrypoints.app import handle_sweep

    handle_sweep(past_due=bool(timer.past_due), full=False)


@bp.function_name("reconcile_full_sweep")
@bp.timer_trigger(arg_name="timer", schedule="%NSP_DRIFT_FULL_SWEEP_SCHEDULE%", run_on_startup=False, use_monitor=True)
def reconcile_full_sweep(timer: func.TimerRequest) -> None:
    """Rare and thorough: every account re-read through ARM (child resources included)."""
    from shared.entrypoints.app import handle_sweep

    handle_sweep(past_due=bool(timer.past_due), full=True)
