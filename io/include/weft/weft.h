// <weft/weft.h> — the one header a weft user includes (it lives in io/, the
// top layer, because it includes every layer's public header).
//
// weft is an M:N threading runtime: many user-level threads (ULTs) on a few
// kernel threads (KLTs) it creates itself. See README.md for a tour and
// DESIGN.md for the design.
#pragma once

#include "weft/runtime.h"
#include "weft/debug.h"
#include "weft/sync.h"
#include "weft/task_group.h"
#include "weft/select.h"
#include "weft/timer.h"
#include "weft/io.h"
#include "weft/io_select.h"
#include "weft/process.h"
#include "weft/version.h"
