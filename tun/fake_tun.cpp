#include "tun/device.hpp"

#include <utility>

namespace ipsecgw::tun {

void FakeTun::inject(core::ByteSpan packet) {
  std::lock_guard lock(mutex_);
  to_read_.emplace_back(packet.begin(), packet.end());
}

std::vector<core::Bytes> FakeTun::take_written() {
  std::lock_guard lock(mutex_);
  return std::exchange(written_, {});
}

std::size_t FakeTun::read_batch(std::span<core::Packet*> pkts) {
  std::lock_guard lock(mutex_);
  std::size_t n = 0;
  while (n < pkts.size() && !to_read_.empty()) {
    pkts[n++]->assign(to_read_.front());
    to_read_.pop_front();
  }
  return n;
}

std::size_t FakeTun::write_batch(std::span<core::Packet* const> pkts) {
  std::lock_guard lock(mutex_);
  for (const auto* p : pkts) written_.emplace_back(p->span().begin(), p->span().end());
  return pkts.size();
}

}  // namespace ipsecgw::tun
