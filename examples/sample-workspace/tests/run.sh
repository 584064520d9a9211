#!/bin/sh
# Runs the checks of calc.sh and prints a summary; exits non-zero on failure.
cd "$(dirname "$0")/.." || exit 2
. ./calc.sh

passed=0
failed=0
check() {
    name=$1 expected=$2 actual=$3
    if [ "$expected" = "$actual" ]; then
        echo "ok    $name"
        passed=$((passed + 1))
    else
        echo "FAIL  $name: expected '$expected', got '$actual'"
        failed=$((failed + 1))
    fi
}

check "add 2 3" 5 "$(add 2 3)"
check "multiply 4 5" 20 "$(multiply 4 5)"
check "divide 9 3" 3 "$(divide 9 3)"
check "divide by zero fails" 1 "$(divide 1 0 2>/dev/null; echo $?)"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
