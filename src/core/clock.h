/* The one clock that timings read: monotonic seconds (never steps back when the wall clock
 * is set). Only differences mean anything. */
#ifndef MN_CLOCK_H
#define MN_CLOCK_H

double mn_clock_s(void);

#endif
