# Small arithmetic helpers, sourced by the tests.

add() {
    echo $(($1 + $2))
}

multiply() {
    echo $(($1 * $2))
}

# Integer division; refuses to divide by zero.
divide() {
    if [ "$2" -eq 0 ]; then
        echo "division by zero" >&2
        return 1
    fi
    echo $(($1 / $2))
}
