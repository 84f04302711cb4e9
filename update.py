"""Update every Spark to the inventory's versions, one batch of hosts at a time:

    pyinfra inventory.py update.py [--data batch=N|N%] [--data force=1]
    pyinfra inventory.py update.py --data rollback=1        (back to the previous versions)

(or `sparkstack update`, which shows the plan and asks first). Hosts already up to date
are skipped. Each host is checked healthy, checkpointed and backed up, drained out of
every LiteLLM, deployed (new venvs beside the old ones), proven healthy and routed
again; one that fails is rolled back by itself and the rollout stops there: later hosts
stay untouched, and the run ends with a table of what happened to each host.
"""

from pyinfra import host, logger
from pyinfra.operations import python

from sparkstack import rollout
from sparkstack.context import current_host

settings, fleet, secrets = current_host(host, run_arguments=("batch", "force", "rollback"))
run = rollout.plan_once(batch=str(host.data.get("batch") or "1"),
                        force=bool(host.data.get("force")),
                        rollback=bool(host.data.get("rollback")))
if run.plan.changes.get(host.name):
    update = rollout.for_host(run, settings, fleet,
                              rollback_only=bool(host.data.get("rollback")))
    python.call(name="Update this Spark (in its batch's turn)", function=update.run)
else:
    logger.info(f"    [{host.name}] {run.plan.nothing}: skipped")
