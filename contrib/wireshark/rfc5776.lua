-- Wireshark dissector for the TESLA EXT_AUTH header extension of RFC 5776
-- (Timed Efficient Stream Loss-Tolerant Authentication in ALC and NORM).
--
-- It sits on top of Wireshark's own ALC/LCT ("alc") and NORM ("norm") dissectors: a
-- postdissector that finds the ALC or NORM PDU those dissectors recognised, walks its
-- header extensions (RFC 5651 §5.2, RFC 5740 §4.1) to the EXT_AUTH (HET = 1) and shows
-- every field of the seven RFC 5776 types (§3.4, §5.1) under the prefix "rfc5776.".
--
-- Tags (Types 1-4) are not self-describing: the key and MAC lengths come from the
-- session's bootstrap (Type 0), remembered per ASID; before a bootstrap has been seen
-- they are inferred from the extension length (HMAC-SHA-256 / SHA-256 first).
--
-- Install: copy this file to your personal Lua plugins folder (Help > About Wireshark >
-- Folders > "Personal Lua Plugins", e.g. ~/.local/lib/wireshark/plugins/) or run
--   tshark -X lua_script:contrib/wireshark/rfc5776.lua -d udp.port==4000,alc -r cap.pcap
--   tshark -X lua_script:contrib/wireshark/rfc5776.lua -d udp.port==4000,norm -r cap.pcap
-- (Wireshark only dissects ALC/NORM on ports you map with "Decode As" or -d.)

local p = Proto("rfc5776", "TESLA EXT_AUTH (RFC 5776)")

local TYPES = {
    [0] = "Bootstrap Information",
    [1] = "Authentication Tag",
    [2] = "Authentication Tag without key",
    [3] = "Authentication Tag with new key chain commitment",
    [4] = "Authentication Tag with last key of previous chain",
    [5] = "Direct Time Synchronization Request",
    [6] = "Direct Time Synchronization Response",
}
-- RFC 5776 §7: PRF / MAC function types -> key length n_p/8 and MAC length n_m/8
local FUNCS = {
    [0] = "HMAC-SHA-1", [1] = "HMAC-SHA-224", [2] = "HMAC-SHA-256",
    [3] = "HMAC-SHA-384", [4] = "HMAC-SHA-512",
}
local KEY_LEN = { [0] = 20, [1] = 28, [2] = 32, [3] = 48, [4] = 64 }
local MAC_LEN = { [0] = 10, [1] = 14, [2] = 16, [3] = 24, [4] = 32 }
local GROUP_MAC_LEN = 4

local f = p.fields
f.het = ProtoField.uint8("rfc5776.het", "HET")
f.hel = ProtoField.uint8("rfc5776.hel", "HEL (32-bit words)")
f.asid = ProtoField.uint8("rfc5776.asid", "ASID", base.DEC, nil, 0xF0)
f.type = ProtoField.uint8("rfc5776.type", "Type", base.DEC, TYPES, 0x0F)
f.reserved = ProtoField.uint8("rfc5776.reserved", "Reserved")
f.interval = ProtoField.uint32("rfc5776.interval", "Interval index i")
f.disclosed_key = ProtoField.bytes("rfc5776.disclosed_key", "Disclosed key")
f.disclosed_key_interval = ProtoField.uint32("rfc5776.disclosed_key_interval",
    "Disclosed key of interval (i - d)")
f.mac = ProtoField.bytes("rfc5776.mac", "MAC")
f.padding = ProtoField.bytes("rfc5776.padding", "Padding")
f.group_mac = ProtoField.bytes("rfc5776.group_mac", "Group MAC")
-- Type 0
f.version = ProtoField.uint8("rfc5776.version", "Version", base.DEC, nil, 0xC0)
f.flag_s = ProtoField.bool("rfc5776.flags.s", "S (single key chain)", 8, nil, 0x04)
f.flag_g = ProtoField.bool("rfc5776.flags.g", "G (Group MAC)", 8, nil, 0x02)
f.flag_a = ProtoField.bool("rfc5776.flags.a", "A (D^O_t present)", 8, nil, 0x01)
f.d = ProtoField.uint8("rfc5776.d", "Key disclosure delay d")
f.prf = ProtoField.uint8("rfc5776.prf_type", "PRF Type", base.DEC, FUNCS)
f.mac_type = ProtoField.uint8("rfc5776.mac_type", "MAC Function Type", base.DEC, FUNCS)
f.group_mac_type = ProtoField.uint8("rfc5776.group_mac_type", "Group MAC Function Type",
    base.DEC, FUNCS)
f.sig_algo = ProtoField.uint8("rfc5776.sig_algo", "Signature Algorithm")
f.sig_hash = ProtoField.uint8("rfc5776.sig_hash", "Signature Cryptographic Function")
f.sig_len = ProtoField.uint16("rfc5776.sig_len", "Signature Length")
f.t_int = ProtoField.uint16("rfc5776.t_int", "Interval Duration T_int (ms)")
f.t0 = ProtoField.uint64("rfc5776.t0", "T0 (NTP timestamp)", base.HEX)
f.n = ProtoField.uint32("rfc5776.n", "Key chain length N")
f.commitment = ProtoField.bytes("rfc5776.commitment", "Commitment (key K_i)")
f.signature = ProtoField.bytes("rfc5776.signature", "Signature")
f.d_o_t = ProtoField.uint64("rfc5776.d_o_t", "D^O_t (P bit and 63-bit NTP difference)", base.HEX)
-- Types 5, 6
f.t_r = ProtoField.uint64("rfc5776.t_r", "t_r (receiver time, NTP)", base.HEX)
f.t_s = ProtoField.uint64("rfc5776.t_s", "t_s (sender time, NTP)", base.HEX)

local e_len = ProtoExpert.new("rfc5776.bad_length", "EXT_AUTH length does not match its type",
    expert.group.MALFORMED, expert.severity.ERROR)
p.experts = { e_len }

local alc_f = Field.new("alc")
local norm_f = Field.new("norm")

-- per ASID: {kp, km, g, d, sig_len} from the last bootstrap seen
local sessions = {}

local function pad4(n) return n + (-n % 4) end

-- LCT (RFC 5651 §5.1): fixed header, then extensions up to HDR_LEN * 4
local function lct_ext_area(tvb)
    if tvb:len() < 4 then return nil end
    local b0, b1 = tvb(0, 1):uint(), tvb(1, 1):uint()
    if bit.rshift(b0, 4) ~= 1 then return nil end
    local c = bit.band(bit.rshift(b0, 2), 3)
    local s = bit.band(bit.rshift(b1, 7), 1)
    local o = bit.band(bit.rshift(b1, 5), 3)
    local h = bit.band(bit.rshift(b1, 4), 1)
    local start = 4 + 4 * (c + 1) + 4 * s + 2 * h + 4 * o + 2 * h
    return start, tvb(2, 1):uint() * 4
end

local function norm_pid_len(fec_id)
    if fec_id == 129 then return 8 end
    if fec_id == 0 or fec_id == 2 or fec_id == 5 then return 4 end
    return nil
end

-- NORM (RFC 5740 §4): the message-specific base header, then extensions up to hdr_len * 4
local function norm_ext_area(tvb)
    local n = tvb:len()
    if n < 8 or bit.rshift(tvb(0, 1):uint(), 4) ~= 1 then return nil end
    local t = bit.band(tvb(0, 1):uint(), 15)
    local base
    if t == 1 then base = 16           -- NORM_INFO
    elseif t == 6 then base = 8        -- NORM_REPORT
    elseif t == 4 or t == 5 then base = 24  -- NORM_NACK, NORM_ACK
    elseif t == 2 then                 -- NORM_DATA
        if n < 16 then return nil end
        local pl = norm_pid_len(tvb(13, 1):uint())
        if pl == nil then return nil end
        base = 16 + pl
    elseif t == 3 then                 -- NORM_CMD by flavor
        if n < 16 then return nil end
        local flavor = tvb(12, 1):uint()
        if flavor == 1 or flavor == 3 then  -- FLUSH, SQUELCH
            local pl = norm_pid_len(tvb(13, 1):uint())
            if pl == nil then return nil end
            base = 16 + pl
        elseif flavor == 4 then base = 24   -- CC
        else base = 16 end                  -- EOT, REPAIR_ADV, ACK_REQ, APPLICATION
    else
        return nil
    end
    return base, tvb(1, 1):uint() * 4
end

-- offset and length of the EXT_AUTH (HET 1) in [start, stop)
local function find_ext_auth(tvb, start, stop)
    if start == nil or stop > tvb:len() then return nil end
    local pos = start
    while pos + 4 <= stop do
        local het = tvb(pos, 1):uint()
        local len = 4
        if het < 128 then
            len = tvb(pos + 1, 1):uint() * 4
            if len == 0 then return nil end
        end
        if pos + len > stop then return nil end
        if het == 1 then return pos, len end
        pos = pos + len
    end
    return nil
end

-- key and MAC lengths of a tag of type typ, total extension length len
local function tag_layout(asid, typ, len)
    local s = sessions[asid]
    if s ~= nil then
        local kp = (typ == 2) and 0 or s.kp
        local base_len = pad4(8 + kp + s.km)
        if len == base_len + s.g then return kp, s.km, s.g end
        if s.g == 0 and len == base_len + GROUP_MAC_LEN then return kp, s.km, GROUP_MAC_LEN end
    end
    -- no bootstrap seen (or it does not fit): matching PRF and MAC functions first,
    -- SHA-256 first of all
    for _, pass in ipairs({ "same", "any" }) do
        for _, pi in ipairs({ 2, 0, 1, 3, 4 }) do
            for _, mi in ipairs({ 2, 0, 1, 3, 4 }) do
                if pass == "any" or pi == mi then
                    local kp = (typ == 2) and 0 or KEY_LEN[pi]
                    local km = MAC_LEN[mi]
                    for _, g in ipairs({ 0, GROUP_MAC_LEN }) do
                        if pad4(8 + kp + km) + g == len then return kp, km, g end
                    end
                end
            end
        end
    end
    return nil
end

local function dissect_ext_auth(tvb, off, len, tree)
    local r = tvb(off, len)
    local t = tree:add(p, r)
    local asid = bit.rshift(tvb(off + 2, 1):uint(), 4)
    local typ = bit.band(tvb(off + 2, 1):uint(), 15)
    t:add(f.het, tvb(off, 1))
    t:add(f.hel, tvb(off + 1, 1))
    t:add(f.asid, tvb(off + 2, 1))
    t:add(f.type, tvb(off + 2, 1))
    t:append_text(": " .. (TYPES[typ] or ("Type " .. typ)))
    if typ == 0 then
        if len < 32 then t:add_proto_expert_info(e_len); return end
        local flags = tvb(off + 3, 1):uint()
        t:add(f.version, tvb(off + 3, 1))
        t:add(f.flag_s, tvb(off + 3, 1))
        t:add(f.flag_g, tvb(off + 3, 1))
        t:add(f.flag_a, tvb(off + 3, 1))
        local prf, mac = tvb(off + 5, 1):uint(), tvb(off + 6, 1):uint()
        t:add(f.d, tvb(off + 4, 1))
        t:add(f.prf, tvb(off + 5, 1))
        t:add(f.mac_type, tvb(off + 6, 1))
        t:add(f.group_mac_type, tvb(off + 7, 1))
        t:add(f.sig_algo, tvb(off + 8, 1))
        t:add(f.sig_hash, tvb(off + 9, 1))
        t:add(f.sig_len, tvb(off + 10, 2))
        t:add(f.reserved, tvb(off + 12, 2))
        t:add(f.t_int, tvb(off + 14, 2))
        t:add(f.t0, tvb(off + 16, 8))
        t:add(f.n, tvb(off + 24, 4))
        t:add(f.interval, tvb(off + 28, 4))
        local kp, km = KEY_LEN[prf], MAC_LEN[mac]
        local sl = tvb(off + 10, 2):uint()
        local g = (bit.band(flags, 2) ~= 0) and GROUP_MAC_LEN or 0
        local a = (bit.band(flags, 1) ~= 0) and 8 or 0
        if kp == nil or km == nil or 32 + pad4(kp) + pad4(sl) + a + g ~= len then
            t:add_proto_expert_info(e_len)
            return
        end
        sessions[asid] = { kp = kp, km = km, g = g, d = tvb(off + 4, 1):uint(), sig_len = sl }
        local pos = off + 32
        t:add(f.commitment, tvb(pos, kp))
        pos = pos + pad4(kp)
        t:add(f.signature, tvb(pos, sl))
        pos = pos + pad4(sl)
        if a > 0 then t:add(f.d_o_t, tvb(pos, 8)); pos = pos + 8 end
        if g > 0 then t:add(f.group_mac, tvb(pos, g)) end
    elseif typ >= 1 and typ <= 4 then
        local kp, km, g = tag_layout(asid, typ, len)
        if kp == nil then t:add_proto_expert_info(e_len); return end
        t:add(f.reserved, tvb(off + 3, 1))
        t:add(f.interval, tvb(off + 4, 4))
        local s = sessions[asid]
        if kp > 0 then
            t:add(f.disclosed_key, tvb(off + 8, kp))
            if s ~= nil then
                local i = tvb(off + 4, 4):uint()
                if i >= s.d then
                    t:add(f.disclosed_key_interval, tvb(off + 4, 4), i - s.d):set_generated()
                end
            end
        end
        t:add(f.mac, tvb(off + 8 + kp, km))
        local body = 8 + kp + km
        if pad4(body) > body then t:add(f.padding, tvb(off + body, pad4(body) - body)) end
        if g > 0 then t:add(f.group_mac, tvb(off + pad4(body), g)) end
    elseif typ == 5 then
        if len ~= 12 and len ~= 12 + GROUP_MAC_LEN then t:add_proto_expert_info(e_len); return end
        t:add(f.reserved, tvb(off + 3, 1))
        t:add(f.t_r, tvb(off + 4, 8))
        if len > 12 then t:add(f.group_mac, tvb(off + 12, GROUP_MAC_LEN)) end
    elseif typ == 6 then
        if len < 20 then t:add_proto_expert_info(e_len); return end
        t:add(f.reserved, tvb(off + 3, 1))
        t:add(f.t_s, tvb(off + 4, 8))
        t:add(f.t_r, tvb(off + 12, 8))
        local s = sessions[asid]
        local g = (s ~= nil) and s.g or 0
        local sl = (s ~= nil) and s.sig_len or (len - 20 - g)
        if 20 + pad4(sl) + g ~= len then
            g = (len - 20) % 4 == 0 and 0 or g
            sl = len - 20 - g
        end
        t:add(f.signature, tvb(off + 20, sl))
        if g > 0 then t:add(f.group_mac, tvb(off + 20 + pad4(sl), g)) end
    end
end

function p.dissector(_tvb, _pinfo, tree)
    for _, which in ipairs({ { alc_f, lct_ext_area }, { norm_f, norm_ext_area } }) do
        local infos = { which[1]() }
        for _, fi in ipairs(infos) do
            local pdu = fi.range:tvb()
            local start, stop = which[2](pdu)
            local off, len = find_ext_auth(pdu, start, stop)
            if off ~= nil then dissect_ext_auth(pdu, off, len, tree) end
        end
    end
end

function p.init()
    sessions = {}
end

register_postdissector(p)
