"""The README's compatibility table is what the proxy actually does: it is
printed by the binary from the same classification the router dispatches on."""

import subprocess

from harness import REPO, proxy_binary


def test_readme_table_matches_the_binary():
    table = subprocess.run([str(proxy_binary()), "--compatibility-table"], capture_output=True, text=True,
                           check=True, timeout=30).stdout
    readme = (REPO / "README.md").read_text()
    begin, end = "<!-- compatibility-table:begin -->\n", "<!-- compatibility-table:end -->"
    assert begin in readme and end in readme, "README.md lost its table markers"
    current = readme.split(begin, 1)[1].split(end, 1)[0]
    assert current == table, "README.md's table is stale: run scripts/update-compat-table"
    # Every command of the table appears: 240 commands with their subcommands.
    assert table.count("\n| `") > 300
