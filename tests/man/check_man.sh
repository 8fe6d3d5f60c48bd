#!/bin/sh
# Renders each man page with `man -l` and checks it: the required sections,
# every kmsd subcommand (from `kmsd --help`) in kmsd(8), every kmsctl command
# (from kmsctl's command table) in kmsctl(1). Setting names in kmsd.yaml(5)
# are checked against the code by test_kmsd_config.
# usage: check_man.sh MANDIR KMSD KMSCTL_SOURCE
set -eu
mandir=$1 kmsd=$2 kmsctl_src=$3
if ! command -v man >/dev/null 2>&1; then
  echo "SKIP: man is not installed (Debian package man-db)"
  exit 77
fi
fail=0
render() { MANWIDTH=200 man -l "$mandir/$1" 2>/dev/null | col -b; }
for page in kmsd.8 kmsctl.1 kmsd.yaml.5; do
  [ -s "$mandir/$page" ] || { echo "FAIL: $mandir/$page missing"; fail=1; continue; }
  text=$(render "$page")
  for section in NAME SYNOPSIS DESCRIPTION "SEE ALSO"; do
    printf '%s\n' "$text" | grep -qx "$section" || { echo "FAIL: $page has no $section section"; fail=1; }
  done
done
[ "$fail" -eq 0 ] || exit 1

# kmsd(8): every subcommand of the usage line ("run|init|...|\n   verify-state").
subs=$("$kmsd" --help 2>&1 | sed -n '1,2p' | sed 's/^usage: kmsd \[--config FILE\] \[options\] //' |
       tr '|' '\n' | tr -d ' ' | grep -v '^$')
[ -n "$subs" ] || { echo "FAIL: no subcommands in kmsd --help"; exit 1; }
text=$(render kmsd.8 | sed -n '/^COMMANDS$/,/^OPTIONS$/p')
for s in $subs; do
  printf '%s\n' "$text" | grep -qx "       $s" || { echo "FAIL: kmsd(8) lacks the subcommand $s"; fail=1; }
done

# kmsctl(1): every row of kmsctl's command table.
cmds=$(sed -n 's/^    {"\([a-z-]*\)", kmsctl_cmd_.*/\1/p' "$kmsctl_src")
[ "$(printf '%s\n' "$cmds" | wc -l)" -gt 10 ] || { echo "FAIL: kmsctl's command table not found"; exit 1; }
text=$(render kmsctl.1 | sed -n '/^COMMANDS$/,/^EXIT STATUS$/p')
for c in $cmds; do
  printf '%s\n' "$text" | grep -qE "^       $c( |\$)" || { echo "FAIL: kmsctl(1) lacks the command $c"; fail=1; }
done
[ "$fail" -eq 0 ] && echo "man pages: sections, $(printf '%s\n' "$subs" | wc -l) kmsd subcommands, $(printf '%s\n' "$cmds" | wc -l) kmsctl commands"
exit "$fail"
