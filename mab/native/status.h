// What every native function that can fail returns: MAB_OK, or why not. The Python
// gate (mab/native/gate.py) turns each code into an error of mab/errors.py.
#pragma once

#define MAB_OK 0
#define MAB_DECLINED 1      // the fast parser leaves this body to the general one
#define MAB_E_NOMEM (-1)    // an allocation failed
#define MAB_E_RANGE (-2)    // a span, an order entry or k is out of range
#define MAB_E_PARAM (-3)    // a Beta parameter is not finite and > 0
#define MAB_E_SPACE (-4)    // the output buffer is too small
#define MAB_E_REPEAT (-5)   // an id repeats in an index
