// How each text command travels as a meta command, and how the meta reply reads in text: one
// table for both directions (backend_request.cc sends by it, client_reply.cc answers by it).
// Retrievals go key by key as `mg <key> v f [c] [T<exptime>]` (encodeKeyRead) and answer
// `VALUE ... END`. Pure.
#pragma once

#include <cstddef>
#include <iterator>
#include <string_view>

#include "proxy/protocol/command.h"

namespace memzone::protocol {

struct TextCommand {
  Command command;
  // The request: verb, the flags it always carries, which text arguments become flags.
  std::string_view verb;
  std::string_view fixed;
  bool flags_exptime;  // storage: F<flags> T<exptime>
  bool cas;            // C<cas unique>
  bool exptime_flag;   // touch: T<exptime>
  bool delta;          // incr/decr: D<delta>
  // The reply, per meta code (empty: that code cannot answer it). VA (incr/decr) is the
  // number on a line of its own.
  std::string_view hd, en, nf, ns, ex;
};

// In Command order from kSet. memcached's append/prepend ignore the text flags and exptime,
// and so does the translation.
inline constexpr TextCommand kTextCommands[] = {
    {Command::kSet, "ms", "", true, false, false, false,  //
     "STORED\r\n", "", "NOT_FOUND\r\n", "NOT_STORED\r\n", "EXISTS\r\n"},
    {Command::kAdd, "ms", " ME", true, false, false, false,  //
     "STORED\r\n", "", "NOT_FOUND\r\n", "NOT_STORED\r\n", "EXISTS\r\n"},
    {Command::kReplace, "ms", " MR", true, false, false, false,  //
     "STORED\r\n", "", "NOT_FOUND\r\n", "NOT_STORED\r\n", "EXISTS\r\n"},
    {Command::kAppend, "ms", " MA", false, false, false, false,  //
     "STORED\r\n", "", "NOT_FOUND\r\n", "NOT_STORED\r\n", "EXISTS\r\n"},
    {Command::kPrepend, "ms", " MP", false, false, false, false,  //
     "STORED\r\n", "", "NOT_FOUND\r\n", "NOT_STORED\r\n", "EXISTS\r\n"},
    {Command::kCas, "ms", "", true, true, false, false,  //
     "STORED\r\n", "", "NOT_FOUND\r\n", "NOT_STORED\r\n", "EXISTS\r\n"},
    {Command::kDelete, "md", "", false, false, false, false,  //
     "DELETED\r\n", "", "NOT_FOUND\r\n", "", "EXISTS\r\n"},
    {Command::kIncr, "ma", " v", false, false, false, true,  //
     "", "", "NOT_FOUND\r\n", "NOT_FOUND\r\n", "EXISTS\r\n"},
    {Command::kDecr, "ma", " v MD", false, false, false, true,  //
     "", "", "NOT_FOUND\r\n", "NOT_FOUND\r\n", "EXISTS\r\n"},
    {Command::kTouch, "mg", "", false, false, true, false,  //
     "TOUCHED\r\n", "NOT_FOUND\r\n", "", "", ""},
};

// The row for `command`, or null (retrievals, meta and local commands).
inline const TextCommand* textCommand(Command command) {
  if (command < Command::kSet) return nullptr;
  size_t i = static_cast<size_t>(command) - static_cast<size_t>(Command::kSet);
  if (i >= std::size(kTextCommands) || kTextCommands[i].command != command) return nullptr;
  return &kTextCommands[i];
}

}  // namespace memzone::protocol
