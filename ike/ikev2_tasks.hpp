// The IKEv2 tasks, one per file, after strongSwan's sa/ikev2/tasks. Only the
// task manager makes them; `initiator` picks the role.
//
//   ikev2_ike_init.cpp      IKE_SA_INIT: proposals, KE, nonces, NAT detection, COOKIE, INVALID_KE
//   ikev2_ike_auth.cpp      IKE_AUTH with PSK, identities, INITIAL_CONTACT
//   ikev2_child_create.cpp  a Child SA: in IKE_AUTH, or by CREATE_CHILD_SA
//   ikev2_child_rekey.cpp   CREATE_CHILD_SA with REKEY_SA, collisions (2.8.1)
//   ikev2_child_delete.cpp  INFORMATIONAL with DELETE of Child SAs
//   ikev2_ike_rekey.cpp     CREATE_CHILD_SA for a new IKE SA, collisions (2.8.2)
//   ikev2_ike_delete.cpp    INFORMATIONAL with DELETE of the IKE SA
//   ikev2_ike_dpd.cpp       empty INFORMATIONAL: liveness check and its answer
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "ike/connection.hpp"
#include "ike/ikev2_task.hpp"

namespace ipsecgw::ike {

class IkeSa;

std::unique_ptr<Task> ike_init_create(IkeSa& sa, bool initiator);
std::unique_ptr<Task> ike_auth_create(IkeSa& sa, bool initiator);
// Initiator: the Child SA of `cc` (in IKE_AUTH when the IKE SA is not up yet).
// Responder (`cc` null): the child the peer's selectors match.
std::unique_ptr<Task> child_create_create(IkeSa& sa, const ChildConfig* cc, bool initiator);
// Initiator: rekeys our Child SA with inbound SPI `spi_in`.
std::unique_ptr<Task> child_rekey_create(IkeSa& sa, std::uint32_t spi_in, bool initiator);
// Initiator: our Child SAs `spis_in` (see TaskManager::queue_child_delete),
// or all of `cc`; responder: no SPIs, no config.
std::unique_ptr<Task> child_delete_create(IkeSa& sa, std::vector<std::uint32_t> spis_in, bool already_removed,
                                          const ChildConfig* cc);
std::unique_ptr<Task> ike_rekey_create(IkeSa& sa, bool initiator);
std::unique_ptr<Task> ike_delete_create(IkeSa& sa, bool initiator);
std::unique_ptr<Task> ike_dpd_create(IkeSa& sa, bool initiator);

}  // namespace ipsecgw::ike
