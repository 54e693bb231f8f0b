#!/usr/bin/env bash
# One device call that does what the card it got is for: the H200's bars are judged only on an
# H200, yet a call naming nvidia-h200 mostly gets an H100 (twenty-fourth and twenty-fifth
# sessions: every start an H100). So give each call both plans:
#   bash scripts/by_card.sh "<command for an H200>" "<command for any other card>"
# The card's name is printed first; the chosen command runs under bash -c with OUT as given.
# An empty command does nothing (e.g. "" as the second: keep the budget for another try; the
# start is spent either way).
set -u
card=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
echo "card: ${card:-none}"
case "$card" in
  *H200*) cmd=${1:-} ;;
  *) cmd=${2:-} ;;
esac
[ -n "$cmd" ] || { echo "nothing to run on this card"; exit 0; }
echo "running: $cmd"
bash -c "$cmd"
