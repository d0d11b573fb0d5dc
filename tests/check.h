/*
 * check.h - the assertion macro of the C test programs: counts checks and
 * failures, reports each failure with its line, and lets the test go on so
 * one run shows every broken case. main() returns CHECK_STATUS(name).
 */
#ifndef FPX_TESTS_CHECK_H
#define FPX_TESTS_CHECK_H

#include <stdio.h>

static int failures;
static int checks;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        checks++;                                                                                  \
        if (!(cond)) {                                                                             \
            failures++;                                                                            \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

/* Prints the tally; the exit status of a test program. */
#define CHECK_STATUS(name)                                                                         \
    (printf("%s: %d checks, %d failed\n", name, checks, failures), failures ? 1 : 0)

#endif
