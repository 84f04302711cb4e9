"""Test deploy (run by pyinfra like deploy.py): the product's own file operation, as the
deploy writes every unit, asked to put a unit that systemd refuses (a relative
ExecStart) over Open WebUI's running one."""

from io import StringIO

from sparkstack_host.contract import UNIT_DIR

from sparkstack.operations import put_file

put_file(name="Write a unit systemd refuses",
         src=StringIO("[Unit]\nDescription=refused\n\n[Service]\nExecStart=bin/open-webui\n"),
         dest=f"{UNIT_DIR}/sparkstack-openwebui.service", mode="644")
